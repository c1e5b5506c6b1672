"""Messages no service should accept, on every subject a service consumes.

Each fuzzed message has its own ``Nats-Msg-Id`` (``fuzz-<tag>-<n>``), and every id inside
its body starts with ``fuzz-<tag>`` too, so a dead letter can be traced back to it (by the
original headers it carries, or by the body for a conflicting duplicate, which the tracker
re-serialises) and Postgres can be searched for anything that got in.

The cases: bytes that are not JSON, JSON that is not an object, wrong types, missing
required fields, NUL characters inside otherwise valid events, envelope versions 0, 2 and
99, numeric timestamps, bodies near NATS's 1 MiB limit (600 kB of quotes, whose escaped
form is twice that, and a megabyte-long field), optionally a 2 MB body (a server with a
larger ``max_payload``), and on ``run.event`` a second body under an ``event_id`` already
stored (a conflicting duplicate: the first body must stay).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.client import TallyClient
from tally.db.tables import run_events, runs, task_status_events, tasks, token_usage
from tally.events import DeadLetter, RunEvent, new_id
from tests.chaos.workload import T0

#: Subjects with a durable consumer (the tracker's, estimator's, assigner's, learner's,
#: quota's and reporter's).
CONSUMED = (
    "task.created",
    "task.estimated",
    "task.assigned",
    "task.status_changed",
    "run.started",
    "run.event",
    "run.finished",
    "run.recorded",
)
ISO = T0.isoformat()


def _base(subject: str, ident: str, ws: str) -> dict[str, Any]:
    """A valid body for ``subject`` (or, for the two with nested estimates, a near one)."""
    env = {"event_id": ident, "occurred_at": ISO, "schema_version": 1, "workspace": ws}
    bodies: dict[str, dict[str, Any]] = {
        "task.created": {"task_id": ident, "title": "Fuzzed task"},
        "task.estimated": {"task_id": ident, "estimate": {"story_points": 3}},
        "task.assigned": {"task_id": ident, "model": "gpt-5", "assignment_id": ident},
        "task.status_changed": {"task_id": ident, "to_status": "in_progress", "changed_at": ISO},
        "run.started": {"run_id": ident, "task_id": ident, "started_at": ISO},
        "run.event": {"run_id": ident, "at": ISO, "detail": {"kind": "note", "text": "hello"}},
        "run.finished": {
            "run_id": ident,
            "task_id": ident,
            "outcome": "complete",
            "success": True,
            "finished_at": ISO,
        },
        "run.recorded": {
            "run_id": ident,
            "task_id": ident,
            "outcome": "complete",
            "success": True,
            "started_at": ISO,
            "finished_at": ISO,
            "actual_hours": 1.0,
        },
    }
    return {**env, **bodies[subject]}


def _required_key(subject: str) -> str:
    return "run_id" if subject.startswith("run.") else "task_id"


def _dump(body: Any) -> bytes:
    return json.dumps(body).encode()


Case = Callable[[random.Random, str, str, str], bytes]


def _garbage(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))) + b"\xff{"


def _not_object(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    return rng.choice([b"[1, 2, 3]", b'"run"', b"null", b"42", b"{", b"", b"{}"])


def _wrong_type(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    body = _base(subject, ident, ws)
    key = rng.choice([_required_key(subject), "workspace", "event_id"])
    body[key] = rng.choice([[ident], {"id": ident}, True])
    return _dump(body)


def _missing(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    body = _base(subject, ident, ws)
    del body[_required_key(subject)]
    return _dump(body)


def _nul(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    body = _base(subject, ident, ws)
    key = _required_key(subject)
    body[key] = body[key] + "\x00"
    return _dump(body)


def _version(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    body = _base(subject, ident, ws)
    body["schema_version"] = rng.choice([0, 2, 99])
    return _dump(body)


def _numeric_time(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    body = _base(subject, ident, ws)
    body["occurred_at"] = rng.choice([12345, 1_767_225_600, 1_767_225_600_000.5])
    return _dump(body)


def _quotes(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    return b'"' * 600_000


def _megabyte_field(rng: random.Random, subject: str, ident: str, ws: str) -> bytes:
    body = _base(subject, ident, ws)
    body["workspace"] = "w" * 1_000_000  # far past its 64 characters
    return _dump(body)


SMALL: tuple[Case, ...] = (
    _garbage,
    _not_object,
    _wrong_type,
    _missing,
    _nul,
    _version,
    _numeric_time,
)


@dataclass
class Fuzz:
    """A planned set of fuzzed messages: ``(message id, subject, body)``."""

    tag: str
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: run.event originals stored before their conflicting second bodies: id -> body
    originals: dict[str, RunEvent] = field(default_factory=dict)


def plan(
    n: int,
    *,
    workspace: str,
    big: int = 10,
    two_mb: bool = False,
    conflicts: int = 50,
    seed: int = 11,
) -> Fuzz:
    """``n`` messages in all: ``big`` near 1 MiB, a 2 MB one if ``two_mb``, ``conflicts``
    conflicting duplicates on run.event, the rest small cases spread over the subjects."""
    rng = random.Random(seed)
    fuzz = Fuzz(tag=f"fuzz-{new_id()[:8]}")
    ws = workspace

    def ident() -> str:
        return f"{fuzz.tag}-{len(fuzz.messages):05d}"

    for i in range(conflicts):
        original = RunEvent(
            event_id=f"{fuzz.tag}ok-{i}",
            run_id=f"{fuzz.tag}ok-run",
            workspace=ws,
            at=T0,
            detail={"kind": "note", "text": f"first body {i}"},
        )
        fuzz.originals[original.event_id] = original
        mid = ident()
        second = {"kind": "note", "text": f"second body {mid}"}
        other = RunEvent(**{**original.model_dump(), "detail": second})
        fuzz.messages.append((mid, "run.event", other.to_json()))
    for i in range(big):
        mid = ident()
        subject = CONSUMED[i % len(CONSUMED)]
        case = _quotes if i % 2 else _megabyte_field
        fuzz.messages.append((mid, subject, case(rng, subject, mid, ws)))
    if two_mb:
        mid = ident()
        fuzz.messages.append((mid, "run.event", b"[" + b"0," * 1_000_000 + b"0]"))
    while len(fuzz.messages) < n:
        mid = ident()
        subject = CONSUMED[len(fuzz.messages) % len(CONSUMED)]
        case = SMALL[rng.randrange(len(SMALL))]
        fuzz.messages.append((mid, subject, case(rng, subject, mid, ws)))
    return fuzz


async def publish_originals(client: TallyClient, fuzz: Fuzz) -> None:
    """The valid first bodies of the conflicting duplicates (wait until they are stored)."""
    for original in fuzz.originals.values():
        await client.publish(original)


async def publish(client: TallyClient, fuzz: Fuzz) -> None:
    """Every fuzzed message, many at a time."""
    sem = asyncio.Semaphore(64)

    async def one(mid: str, subject: str, body: bytes) -> None:
        async with sem:
            await client.js.publish(
                client.catalog.subject(subject), body, headers={"Nats-Msg-Id": mid}, timeout=30
            )

    await asyncio.gather(*(one(*m) for m in fuzz.messages))


class Letters:
    """Every dead letter of the namespace, read from the DLQ stream as they are stored."""

    def __init__(self) -> None:
        self.found: list[DeadLetter] = []
        self._sub: Any = None

    async def start(self, client: TallyClient) -> None:
        async def on_msg(msg: Any) -> None:
            self.found.append(DeadLetter.model_validate_json(msg.data))

        catalog = client.catalog
        self._sub = await client.js.subscribe(
            catalog.subject("dlq.>"),
            stream=catalog.stream("DLQ"),
            ordered_consumer=True,
            cb=on_msg,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


def traced(fuzz: Fuzz, found: list[DeadLetter]) -> tuple[set[str], int]:
    """The fuzzed message ids that have a dead letter with a reason, and how many letters
    one service wrote for one message more than once."""
    pattern = re.compile(re.escape(fuzz.tag) + r"-\d{5}")
    ids: set[str] = set()
    per_service: Counter[tuple[str, str]] = Counter()
    for letter in found:
        if not letter.error:
            continue
        mid = letter.headers.get("Nats-Msg-Id", "")
        if not mid.startswith(fuzz.tag):
            m = pattern.search(letter.payload)
            mid = m.group(0) if m else ""
        if mid:
            ids.add(mid)
            per_service[(letter.service, mid)] += 1
    return ids, sum(c - 1 for c in per_service.values())


async def invalid_rows(engine: AsyncEngine, fuzz: Fuzz) -> int:
    """Rows in Postgres that came from a fuzzed message (there should be none)."""
    like = f"{fuzz.tag}-%"
    queries = [
        select(func.count()).select_from(tasks).where(tasks.c.task_id.like(like)),
        select(func.count()).select_from(runs).where(runs.c.run_id.like(like)),
        select(func.count())
        .select_from(task_status_events)
        .where(task_status_events.c.task_id.like(like)),
        select(func.count())
        .select_from(run_events)
        .where(or_(run_events.c.run_id.like(like), run_events.c.event_id.like(like))),
        select(func.count()).select_from(token_usage).where(token_usage.c.run_id.like(like)),
    ]
    async with engine.connect() as conn:
        bad = sum([int(await conn.scalar(q) or 0) for q in queries])
        # A conflicting second body must not have replaced the first.
        kept = await conn.execute(
            select(run_events.c.event_id, run_events.c.detail).where(
                run_events.c.event_id.in_(list(fuzz.originals))
            )
        )
        for event_id, detail in kept:
            if detail.get("text") != fuzz.originals[event_id].detail.text:  # type: ignore[union-attr]
                bad += 1
    return bad
