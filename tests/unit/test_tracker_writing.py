"""Batches written at once never share an event id (see `services.tracker.writing`)."""

from __future__ import annotations

import asyncio

import pytest

from services.tracker.writing import WritingIds


async def settle() -> None:
    """Let every task that can run do so (no timer involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_batch_sharing_an_id_waits_for_the_one_being_written() -> None:
    writing = WritingIds()
    entered: list[str] = []
    release = {name: asyncio.Event() for name in ("first", "shared", "apart")}

    async def write(name: str, ids: list[str]) -> None:
        async with writing.claim(ids):
            entered.append(name)
            await release[name].wait()

    tasks = [
        asyncio.create_task(write("first", ["a", "b"])),
        asyncio.create_task(write("shared", ["b", "c"])),
        asyncio.create_task(write("apart", ["d"])),
    ]
    await settle()
    assert entered == ["first", "apart"]  # "shared" waits: "b" is being written

    release["apart"].set()
    await settle()
    assert entered == ["first", "apart"]

    release["first"].set()
    await settle()
    assert entered == ["first", "apart", "shared"]
    release["shared"].set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_a_failed_or_cancelled_write_lets_the_next_batch_go() -> None:
    writing = WritingIds()

    async def fail() -> None:
        async with writing.claim(["a"]):
            raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        await fail()
    started = asyncio.Event()

    async def hold() -> None:
        async with writing.claim(["a"]):
            started.set()
            await asyncio.Event().wait()

    held = asyncio.create_task(hold())
    await asyncio.wait_for(started.wait(), 5)
    waiting = asyncio.create_task(writing.claim(["a"]).__aenter__())
    await settle()
    assert not waiting.done()
    held.cancel()
    await asyncio.wait_for(waiting, 5)
