"""Tally's shared library: event schemas, bus helpers, storage, and the agents' SDK.

``tally.connect(url)`` is the SDK's entry point (see :mod:`tally.sdk`).
"""

from tally.sdk import Run, RunLanes, Tally, Task, connect

__all__ = ["Run", "RunLanes", "Tally", "Task", "connect"]
