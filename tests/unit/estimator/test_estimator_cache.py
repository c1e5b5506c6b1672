"""Workspace models: one build at a time, kept warm, rebuilt when history changes."""

from __future__ import annotations

import asyncio

from services.estimator.cache import WorkspaceCache
from services.estimator.hours import HoursModel
from services.estimator.scoring import VelocityConfig
from services.estimator.workspace import WorkspaceModel


class FakeHistory:
    """A workspace whose build takes a while and whose history can change."""

    def __init__(self) -> None:
        self.version = 0
        self.runs = 0
        self.builds = 0
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def fingerprint(self, _: str) -> tuple[int, int]:
        return self.version, self.runs

    async def build(self, _: str) -> WorkspaceModel:
        self.builds += 1
        self.started.set()
        await self.gate.wait()
        return WorkspaceModel(None, HoursModel((), VelocityConfig()))


async def test_concurrent_cold_estimates_share_one_build() -> None:
    """The defect: 16 first estimates on a cold workspace each rebuilt its model."""
    history = FakeHistory()
    cache = WorkspaceCache(history.fingerprint, history.build, check_interval_s=0)
    waiters = [asyncio.ensure_future(cache.get("acme")) for _ in range(16)]
    await asyncio.sleep(0)
    history.gate.set()
    models = await asyncio.gather(*waiters)
    assert history.builds == 1 and cache.builds == {"acme": 1}
    assert all(m is models[0] for m in models)


async def test_a_warm_model_is_kept_until_history_changes() -> None:
    history = FakeHistory()
    history.gate.set()
    cache = WorkspaceCache(history.fingerprint, history.build, check_interval_s=0)
    first = await cache.get("acme")
    for _ in range(5):
        assert await cache.get("acme") is first
    assert history.builds == 1
    cache.invalidate("acme")  # an import here: the next estimate waits for the rebuild
    second = await cache.get("acme")
    assert second is not first and history.builds == 2
    history.version += 1  # an import through another replica: waited for as well
    assert await cache.get("acme") is not second
    assert history.builds == 3


async def test_runs_elsewhere_rebuild_in_the_background_without_a_stall() -> None:
    history = FakeHistory()
    history.gate.set()
    cache = WorkspaceCache(history.fingerprint, history.build, check_interval_s=0)
    first = await cache.get("acme")
    history.gate.clear()  # the next build takes a while
    history.runs += 1  # runs were measured
    assert await cache.get("acme") is first  # answered at once by the warm model
    cache.invalidate("acme", wait=False)  # a calibration arrives meanwhile: same build
    assert await cache.get("acme") is first
    history.gate.set()
    await cache._entries["acme"].building  # type: ignore[misc]
    assert await cache.get("acme") is not first
    assert history.builds <= 3


async def test_invalidation_rebuilds_once_even_during_a_build() -> None:
    history = FakeHistory()
    cache = WorkspaceCache(history.fingerprint, history.build, check_interval_s=60)
    waiter = asyncio.ensure_future(cache.get("acme"))
    await history.started.wait()  # the build has read the old history
    cache.invalidate("acme")  # an import lands while the first build reads old history
    history.gate.set()
    await waiter
    assert history.builds == 2  # the stale build was not kept
    await cache.get("acme")
    assert history.builds == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_build() -> None:
    history = FakeHistory()
    cache = WorkspaceCache(history.fingerprint, history.build)
    impatient = asyncio.ensure_future(cache.get("acme"))
    await asyncio.sleep(0)
    impatient.cancel()
    history.gate.set()
    await cache.get("acme")
    assert history.builds == 1
