"""``tally dlq``: what the services could not process, with the reasons; and replaying it.

Dead letters are read from the DLQ stream by sequence number (JetStream's message get),
newest first unless told otherwise, so every letter can be reached however many there
are: a consumer that never acknowledges would stop at its max-ack-pending (1,000). A
letter's id is its sequence number in the stream; ``--before ID`` pages further back.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from nats.js.errors import NotFoundError

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail, run, settings
from tally.client import TallyClient
from tally.events import DeadLetter
from tally.subjects import DLQ_PREFIX

app = typer.Typer(
    help="Dead letters: messages a service could not process, newest first; replay them.",
    invoke_without_command=True,
)

#: Messages read from the stream at once.
CHUNK = 64
#: Header naming the dead letter a replayed message came from.
REPLAY_HEADER = "Tally-Replay-Of"
_SPAN = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``12h``, ``7d``, ``2w`` or an ISO date/time, as a point in time (UTC).

    Raises:
        typer.BadParameter: neither (the message names the option).
    """
    if m := _SPAN.match(text.strip()):
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected 30m, 12h, 7d, 2w or an ISO date, got {text!r}", param_hint="--since"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Letter:
    """A dead letter and its id (its sequence number in the DLQ stream)."""

    id: int
    letter: DeadLetter

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.letter.model_dump(mode="json")}


async def _get(client: TallyClient, stream: str, seq: int) -> Any:
    try:
        return await client.js.get_msg(stream, seq)
    except NotFoundError:  # deleted, or aged out of the stream
        return None


async def scan(
    client: TallyClient,
    *,
    service: str | None = None,
    newest_first: bool = True,
    before: int | None = None,
) -> AsyncIterator[Letter]:
    """Every dead letter (of one service, or all), in stream order or its reverse.

    Args:
        before: only letters whose id is lower than this.
    """
    stream = client.catalog.stream("DLQ")
    state = (await client.js.stream_info(stream)).state
    if not state.messages:
        return
    first, last = state.first_seq, state.last_seq
    if before is not None:
        last = min(last, before - 1)
    wanted = client.catalog.dlq(service) if service else None
    starts = range(last, first - 1, -CHUNK) if newest_first else range(first, last + 1, CHUNK)
    for start in starts:
        seqs = (
            range(start, max(first, start - CHUNK + 1) - 1, -1)
            if newest_first
            else range(start, min(last, start + CHUNK - 1) + 1)
        )
        for msg in await asyncio.gather(*(_get(client, stream, s) for s in seqs)):
            if msg is None or (wanted and msg.subject != wanted):
                continue
            yield Letter(msg.seq, DeadLetter.model_validate_json(msg.data))


async def read_letters(
    service: str | None = None,
    limit: int = 20,
    *,
    since: datetime | None = None,
    newest_first: bool = True,
    before: int | None = None,
) -> tuple[list[Letter], bool]:
    """Up to ``limit`` dead letters (0: all) and whether more match beyond them."""
    s = settings()
    found: list[Letter] = []
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        async for item in scan(client, service=service, newest_first=newest_first, before=before):
            if since is not None and item.letter.failed_at < since:
                continue
            if limit and len(found) == limit:
                return found, True
            found.append(item)
    return found, False


@app.callback()
def show(
    ctx: typer.Context,
    service: str | None = typer.Option(None, "--service", "-s", help="Only this service."),
    since: str | None = typer.Option(
        None, help="Only letters dead-lettered since: 30m, 12h, 7d, 2w or an ISO date."
    ),
    limit: int = typer.Option(20, help="How many to show; 0 for all.", min=0),
    before: int | None = typer.Option(
        None, help="Only letters older than this id (the next page).", min=1
    ),
    oldest_first: bool = typer.Option(False, "--oldest-first", help="Oldest first."),
    as_json: bool = JsonOpt,
) -> None:
    """Messages that were dead-lettered, newest first: id, service, subject, error, payload."""
    if ctx.invoked_subcommand is not None:
        return
    start = parse_since(since, datetime.now(UTC)) if since else None
    letters, more = run(
        read_letters(service, limit, since=start, newest_first=not oldest_first, before=before)
    )
    if as_json:
        emit_json([item.as_json() for item in letters])
        return
    if not letters:
        console.print("no dead letters")
        return
    for item in letters:
        letter = item.letter
        payload = letter.payload if len(letter.payload) <= 200 else letter.payload[:200] + "…"
        if letter.payload_ref:
            payload += f" ({letter.payload_size:,} bytes, kept whole: {letter.payload_ref})"
        console.print(
            f"[bold]#{item.id} {letter.failed_at:%Y-%m-%d %H:%M:%S}Z {letter.service}[/] "
            f"{letter.subject} (delivery {letter.deliveries}): [red]{letter.error}[/]\n"
            f"    {payload}",
            highlight=False,
        )
    if more and not oldest_first:
        console.print(f"[dim]more: tally dlq --before {letters[-1].id}[/]", highlight=False)
    elif more:
        console.print(f"[dim]more: raise --limit (now {limit})[/]", highlight=False)


async def _original_body(client: TallyClient, letter: DeadLetter) -> bytes:
    """The whole body a letter stands for: kept in the object store when it was cut."""
    if not letter.payload_ref:
        return letter.payload.encode("utf-8")
    bucket, _, key = letter.payload_ref.partition("/")
    kept = await (await client.js.object_store(bucket)).get(key)
    return bytes(kept.data or b"")


async def replay_letters(ids: list[int], payload: bytes | None) -> list[dict[str, Any]]:
    """Republish dead letters to their original subjects with their original headers.

    The message id becomes ``replay:<letter id>:<hash of the body>``: JetStream would drop
    the original id as a duplicate, and a letter replayed twice with the same body is
    published once (a different fix goes out).
    """
    s = settings()
    out = []
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        stream = client.catalog.stream("DLQ")
        for letter_id in ids:
            msg = await _get(client, stream, letter_id)
            if msg is None or not msg.subject.startswith(client.catalog.subject(DLQ_PREFIX)):
                fail(f"no dead letter with id {letter_id}", code=EXIT_BAD_INPUT)
            letter = DeadLetter.model_validate_json(msg.data)
            try:
                target = client.catalog.stream_for(letter.subject)
            except KeyError:
                fail(
                    f"dead letter {letter_id} was a request on {letter.subject}: its "
                    "requester has gone, so there is nothing to replay it to",
                    code=EXIT_BAD_INPUT,
                )
            headers = {k: v for k, v in letter.headers.items() if not k.startswith("Nats-Expected")}
            body = payload if payload is not None else await _original_body(client, letter)
            digest = hashlib.sha256(body).hexdigest()[:32]
            headers["Nats-Msg-Id"] = f"replay:{letter_id}:{digest}"
            headers[REPLAY_HEADER] = str(letter_id)
            ack = await client.js.publish(
                client.catalog.subject(letter.subject), body, stream=target, headers=headers
            )
            out.append(
                {
                    "id": letter_id,
                    "subject": letter.subject,
                    "service": letter.service,
                    "seq": ack.seq,
                    "duplicate": bool(ack.duplicate),
                }
            )
    return out


@app.command("replay")
def replay(
    ids: list[int] = typer.Argument(..., help="Ids of the dead letters (see tally dlq)."),
    payload_file: Path | None = typer.Option(
        None,
        "--payload",
        help="A corrected body to send instead of the original (one id only).",
        exists=True,
        dir_okay=False,
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Republish dead letters to their original subjects, with their original headers."""
    if payload_file is not None and len(ids) != 1:
        raise typer.BadParameter("--payload replaces one letter's body: give one id")
    body = payload_file.read_bytes() if payload_file is not None else None
    done = run(replay_letters(ids, body))
    if as_json:
        emit_json(done)
        return
    for r in done:
        what = "already replayed" if r["duplicate"] else f"republished as #{r['seq']}"
        console.print(f"#{r['id']} {r['service']} {r['subject']}: {what}", highlight=False)
