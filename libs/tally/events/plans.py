"""Imported history: completed tasks a team brings from its tracker, for the estimator.

``history.import`` is a request/reply subject (kept outside every stream, like
``task.estimate``): the CLI validates a whole file first, then sends it in batches, and
the estimator, which owns ``history_tasks``, answers each batch once it is stored. Plans
themselves travel as ``task.created`` events carrying ``plan_id``, ``dependencies`` and
``team_estimate``.
"""

from __future__ import annotations

from pydantic import Field

from tally import subjects
from tally.events.envelope import Event, Model, Timestamp
from tally.events.tasks import MAX_DESCRIPTION_CHARS

HISTORY_IMPORT = subjects.HISTORY_IMPORT
HISTORY_CHANGED = subjects.HISTORY_CHANGED
#: Rows per import request: a batch stays well under NATS's 1 MiB payload for ordinary
#: descriptions; the CLI splits further by size.
MAX_HISTORY_BATCH = 500


class HistoryRecord(Model):
    """A completed task and what it turned out to be worth."""

    task_id: str = Field(min_length=1, max_length=128)
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)
    story_points: float = Field(ge=0, le=1000)
    actual_hours: float | None = Field(None, gt=0)
    task_type: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=128)
    completed_at: Timestamp | None = None


class HistoryImportRequest(Event):
    """Store completed tasks in a workspace's history; re-importing an id replaces it."""

    subject = HISTORY_IMPORT

    records: tuple[HistoryRecord, ...] = Field(min_length=1, max_length=MAX_HISTORY_BATCH)


class HistoryImportReply(Model):
    """What a history import stored."""

    workspace: str
    imported: int = Field(ge=0)
    #: Completed tasks the workspace's history holds after the import.
    history_size: int = Field(ge=0)


class HistoryChanged(Event):
    """A workspace's imported history changed (``history.changed``, a core-NATS notice):
    every estimator replica rebuilds its model of the workspace before its next answer,
    not only the replica that stored the import."""

    subject = HISTORY_CHANGED

    #: The process that stored the change (it has already dropped its model).
    replica: str
