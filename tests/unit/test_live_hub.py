"""The live hub hands a workspace-bound client only its own workspace's messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from services.reporter.live import LiveHub, Message, message_workspace


async def _no_feed(deliver: Callable[[str, bytes], None]) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        return None

    return close


def _run(workspace: str | None) -> bytes:
    return json.dumps({"run_id": "r", "workspace": workspace}).encode()


def _drain(queue: asyncio.Queue[Message | None]) -> list[Message | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_a_message_names_its_workspace_or_none() -> None:
    assert message_workspace(_run("acme")) == "acme"
    assert message_workspace(_run(None)) is None
    assert message_workspace(b"not json") is None
    assert message_workspace(b"[1, 2]") is None


async def test_a_bound_client_gets_only_its_workspace_and_an_open_one_gets_all() -> None:
    hub = LiveHub(_no_feed)
    async with hub.connect("acme") as acme, hub.connect(None) as every, hub.connect("beta") as beta:
        hub.publish("runs", _run("beta"))
        hub.publish("runs", _run("acme"))
        hub.publish("runs", _run(None))  # a message of no workspace: operators only
        hub.publish("runs", b"garbled")
        assert _drain(acme) == [("runs", _run("acme"))]
        assert _drain(beta) == [("runs", _run("beta"))]
        assert len(_drain(every)) == 4
