"""Tally's shared library: event schemas, bus helpers, storage, and the agents' SDK.

``tally.connect(url)`` is the SDK's entry point (see :mod:`tally.sdk`).
"""

from tally.sdk import Run, Tally, connect

__all__ = ["Run", "Tally", "connect"]
