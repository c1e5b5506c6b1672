"""``tally dlq``: what the services could not process, with the reasons."""

from __future__ import annotations

from typing import Any

import typer
from nats.js.api import ConsumerConfig, DeliverPolicy

from tally.cli.common import JsonOpt, console, emit_json, run, settings
from tally.client import TallyClient
from tally.events import DeadLetter


async def read_letters(service: str | None, limit: int) -> list[DeadLetter]:
    """The newest ``limit`` dead letters (of one service, or all), oldest first."""
    s = settings()
    async with TallyClient.connect(s.nats_url, namespace=s.namespace, source="cli") as client:
        subject = client.catalog.dlq(service) if service else client.catalog.dlq("*")
        stream = client.catalog.stream("DLQ")
        info = await client.js.stream_info(stream)
        if not info.state.messages:
            return []
        sub = await client.js.pull_subscribe(
            subject,
            stream=stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0),
        )
        letters: list[DeadLetter] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(256, timeout=0.5)
                except TimeoutError:
                    break
                letters += [DeadLetter.model_validate_json(m.data) for m in msgs]
                if len(msgs) < 256:
                    break
        finally:
            await sub.unsubscribe()
    return letters[-limit:]


def dlq(
    service: str | None = typer.Option(None, "--service", "-s", help="Only this service."),
    limit: int = typer.Option(20, help="How many of the newest to show.", min=1),
    as_json: bool = JsonOpt,
) -> None:
    """Messages that were dead-lettered: service, subject, error and the original payload."""
    letters = run(read_letters(service, limit))
    if as_json:
        emit_json([letter.model_dump(mode="json") for letter in letters])
        return
    if not letters:
        console.print("no dead letters")
        return
    for letter in letters:
        payload: Any = letter.payload if len(letter.payload) <= 200 else letter.payload[:200] + "…"
        console.print(
            f"[bold]{letter.failed_at:%Y-%m-%d %H:%M:%S}Z {letter.service}[/] {letter.subject} "
            f"(delivery {letter.deliveries}): [red]{letter.error}[/]\n    {payload}",
            highlight=False,
        )
