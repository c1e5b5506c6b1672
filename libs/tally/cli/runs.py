"""``tally run …``: publish recorded runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from tally.cli.common import (
    EXIT_BAD_INPUT,
    JsonOpt,
    console,
    emit_json,
    fail,
    reporter_get,
    run,
    settings,
)
from tally.client import TallyClient
from tally.events import Event, RunEvent, RunFinished, RunStarted, TaskStatusChanged
from tally.events.envelope import describe

app = typer.Typer(help="Publish and inspect agent runs.", no_args_is_help=True)

#: What a line of a run file may be, by its ``type`` field.
LINE_TYPES: dict[str, type[Event]] = {
    "run.started": RunStarted,
    "run.event": RunEvent,
    "run.finished": RunFinished,
    "task.status_changed": TaskStatusChanged,
}


def read_run_file(path: Path) -> list[Event]:
    """Parse a JSONL run file: one event per line, ``{"type": "run.event", …fields}``.

    Every line is checked before anything is published, so a bad file publishes nothing.

    Raises:
        typer.Exit: with status 2 and a message naming the line and field.
    """
    if not path.exists():
        fail(f"{path}: no such file", code=EXIT_BAD_INPUT)
    events: list[Event] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as exc:
            fail(f"{path}:{n}: not JSON: {exc.msg}", code=EXIT_BAD_INPUT)
        kind = data.pop("type", None)
        # A line without an id gets one derived from its content, so replays stay idempotent.
        data.setdefault("event_id", hashlib.sha256(line.strip().encode()).hexdigest()[:32])
        if kind not in LINE_TYPES:
            fail(
                f"{path}:{n}: type must be one of {', '.join(LINE_TYPES)}, got {kind!r}",
                code=EXIT_BAD_INPUT,
            )
        try:
            events.append(LINE_TYPES[kind].model_validate(data))
        except ValidationError as exc:
            fail(f"{path}:{n}: {describe(exc, kind)}", code=EXIT_BAD_INPUT)
    count = sum(isinstance(e, RunEvent) for e in events)
    # The tracker waits for this many timeline events before totalling the run.
    return [
        e.model_copy(update={"event_count": count})
        if isinstance(e, RunFinished) and e.event_count is None
        else e
        for e in events
    ]


async def _replay(events: list[Event]) -> dict[str, int]:
    s = settings()
    stored = duplicates = 0
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        for e in events:
            if await client.publish(e):
                stored += 1
            else:
                duplicates += 1
    return {"published": stored, "duplicates": duplicates}


@app.command("replay")
def replay(
    file: Path = typer.Argument(
        ..., help="A JSONL file of run events (see docs/examples/run.jsonl)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Publish a recorded run. Events carry their ids, so replaying a file twice adds nothing."""
    events = read_run_file(file)
    result = run(_replay(events))
    run_ids = sorted({getattr(e, "run_id", "") for e in events} - {""})
    result_out = {**result, "run_ids": run_ids}
    if as_json:
        emit_json(result_out)
        return
    console.print(
        f"published {result['published']} events, {result['duplicates']} already known"
        f" (run {', '.join(run_ids)})"
    )


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="The run to show."),
    as_json: bool = JsonOpt,
) -> None:
    """A run's timeline: every event in order, with its details."""
    body = reporter_get(f"/runs/{run_id}")
    if as_json:
        emit_json(body)
        return
    run = body["run"] or {}
    state = {
        "orphan": "orphan: events but no run.started",
        "waiting_for_start": "events but no run.started yet",
    }.get(body.get("state", ""), run.get("outcome") or "in progress")
    console.print(
        f"[bold]run {run_id}[/] task {run.get('task_id', '?')} model {run.get('model') or '?'} "
        f"({state})"
    )
    for ev in body["timeline"]:
        data = {k: v for k, v in ev["data"].items() if k != "kind"}
        detail = ", ".join(f"{k}={v}" for k, v in readable_fields(data))
        console.print(f"  {str(ev['at'])[11:19]}  {ev['kind']:<18} {detail}", highlight=False)


def readable_fields(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """A timeline event's fields as ``(name, text)`` pairs a person reads: nested objects
    flattened to dotted names, lists joined, numbers with thousands separators; empty
    values left out.

    Example:
        >>> dict(readable_fields({"usage": {"input_tokens": 1200}, "files": ["a", "b"]}))
        {'usage.input_tokens': '1,200', 'files': 'a, b'}
    """
    for key, value in data.items():
        name = f"{prefix}{key}"
        if value is None or value == [] or value == {} or value == "":
            continue
        if isinstance(value, Mapping):
            yield from readable_fields(value, f"{name}.")
        elif isinstance(value, list | tuple):
            yield name, ", ".join(_scalar(v) for v in value)
        else:
            yield name, _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
