"""``Recent``: one computation for concurrent askers, answers kept while fresh."""

from __future__ import annotations

import asyncio
import contextlib

from services.reporter.memo import Recent


async def test_concurrent_askers_share_one_computation() -> None:
    calls = 0
    gate = asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    recent: Recent[int] = Recent(0.0)
    waiting = [asyncio.ensure_future(recent.get("k", compute)) for _ in range(16)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 16
    # Not kept with fresh_for_s 0: the next question computes again.
    assert await recent.get("k", compute) == 2


async def test_fresh_answers_are_kept_per_key_and_failures_are_not() -> None:
    calls: list[str] = []

    async def compute_for(key: str) -> str:
        calls.append(key)
        if key == "bad":
            raise ValueError("bad")
        return f"{key}{len(calls)}"

    recent: Recent[str] = Recent(60.0)
    assert await recent.get("a", lambda: compute_for("a")) == "a1"
    assert await recent.get("a", lambda: compute_for("a")) == "a1"
    assert await recent.get("b", lambda: compute_for("b")) == "b2"
    for _ in range(2):
        with contextlib.suppress(ValueError):
            await recent.get("bad", lambda: compute_for("bad"))
    assert calls == ["a", "b", "bad", "bad"]
