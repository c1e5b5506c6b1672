"""A lease in a JetStream KV bucket: one holder at a time, handed over when the holder
stops cleanly, and taken over after its TTL when the holder goes silent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats
import pytest

from tally.lease import Lease
from tally.sandbox import sandbox
from tally.settings import TallySettings
from tally.subjects import Catalog
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

TTL_S = 1.5


async def test_one_holder_at_a_time_and_a_standby_takes_over(base_settings: TallySettings) -> None:
    async with sandbox(base_settings, prefix="ls", database=False) as s:
        nc = await nats.connect(s.nats_url)
        try:
            catalog = Catalog(s.namespace)
            leases = [Lease(catalog, "learner", holder=f"r{i}", ttl_s=TTL_S) for i in range(3)]
            leading: list[str] = []

            def hooks(lease: Lease) -> dict[str, object]:
                async def acquired() -> None:
                    leading.append(lease.holder)

                async def lost() -> None:
                    leading.remove(lease.holder)

                return {"on_acquired": acquired, "on_lost": lost}

            tasks = {
                lease.holder: asyncio.create_task(lease.run(nc, **hooks(lease)))  # type: ignore[arg-type]
                for lease in leases
            }

            def holders(unlike: tuple[str, ...] = ()) -> Callable[[], Awaitable[list[str] | None]]:
                async def check() -> list[str] | None:
                    return list(leading) if leading and leading[0] not in unlike else None

                return check

            first = await eventually(holders(), what="a holder")
            # Several renewals later, still exactly one.
            await asyncio.sleep(TTL_S * 2)
            assert leading == first and [x.held for x in leases].count(True) == 1

            # A clean stop hands the lease over (it is released, no TTL to wait out).
            tasks.pop(first[0]).cancel()
            second = await eventually(holders(tuple(first)), what="a new holder")
            assert len(second) == 1

            # A holder that dies (kill -9: no release, its key stays) is replaced once the
            # key's TTL passes without a renewal.
            silent = next(x for x in leases if x.holder == second[0])

            async def no_release(kv: object) -> None:
                return None

            silent.release = no_release  # type: ignore[method-assign,assignment]
            frozen = tasks.pop(silent.holder)
            frozen.cancel()
            await asyncio.gather(frozen, return_exceptions=True)
            third = await eventually(
                holders((first[0], second[0])),
                what="the last replica holding the lease",
                timeout=TTL_S * 6,
            )
            assert len(third) == 1
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            await nc.close()
