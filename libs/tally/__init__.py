"""Tally's shared library: event schemas, bus helpers, storage, and the agents' SDK.

``tally.connect(url)`` is the SDK's entry point (see :mod:`tally.sdk`). The SDK is
imported on first use of one of its names, so that importing any part of ``tally`` (the
CLI's ``--help``, say) does not load the NATS client and every event model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tally.sdk import Run, RunLanes, Tally, Task, connect

__all__ = ["Run", "RunLanes", "Tally", "Task", "connect"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tally.sdk"), name)
    raise AttributeError(f"module 'tally' has no attribute {name!r}")
