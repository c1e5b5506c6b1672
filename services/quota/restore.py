"""Writing quota state recomputed from the Postgres ledger back into Redis.

Used after Redis lost its data, through ``tally quota rebuild`` (the quota service's
rebuild responder, :func:`services.quota.handlers.rebuild_from_ledger`): window counters,
live reservations and reached alert markers are restored under the same keys a
:class:`~services.quota.reservations.QuotaStore` writes (listed in that module). What
to restore is computed by :mod:`services.quota.rebuild`.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.quota.keys import SubscriptionKeys
from services.quota.rebuild import LiveReservation, WindowTotals
from services.quota.reservations import QuotaStore
from services.quota.subscriptions import Subscription
from services.quota.windows import WindowCounters, epoch_ms, reached_thresholds, window_period


class QuotaRestorer:
    """Restores a :class:`QuotaStore`'s Redis keys from totals recomputed from the ledger.

    Args:
        store: the store whose keys (namespace, window expiries, tombstone TTL and
            subscriptions) are written.
    """

    def __init__(self, store: QuotaStore) -> None:
        self._store = store

    async def rebuild(self, counters: Iterable[WindowCounters]) -> int:
        """Overwrites the used totals of windows, e.g. from the Postgres ledger after Redis
        lost its data; returns how many windows were written.

        Reserved amounts, live reservations and alert markers are left as they are: if
        Redis lost them, thresholds already crossed alert again at the next reservation.
        """
        store = self._store
        redis = store.redis
        written = 0
        for item in counters:
            store.subscription(item.subscription)
            key = SubscriptionKeys(store.namespace, item.subscription).window(item.window)
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "used_tokens": item.used_tokens,
                        "used_micro": item.used_micro_usd,
                    },
                )
                pipe.expireat(key, store.expire_at(item.window))
                await pipe.execute()
            written += 1
        return written

    async def restore(
        self,
        windows: Iterable[WindowTotals],
        live: Iterable[LiveReservation],
    ) -> tuple[int, int]:
        """Writes window totals and live reservations recomputed from the ledger.

        Unlike :meth:`rebuild`, reserved amounts are restored too, together with the
        reservations that hold them (so a later settle, release or sweep finds them), and
        the alert markers of thresholds already reached (so nobody is alerted twice in a
        window). Windows whose keys would already have expired are skipped, and so is a
        reservation Redis already knows as finished. Each subscription's keys are written
        in one transaction.

        Returns:
            How many windows and how many reservations were written.
        """
        store = self._store
        redis = store.redis
        by_sub: dict[str, tuple[list[WindowTotals], list[LiveReservation]]] = {}
        for w in windows:
            by_sub.setdefault(w.subscription, ([], []))[0].append(w)
        for r in live:
            by_sub.setdefault(r.subscription, ([], []))[1].append(r)
        now_s = store.now().timestamp()
        written = restored = 0
        for name, (sub_windows, sub_live) in by_sub.items():
            sub = store.subscription(name)
            keys = SubscriptionKeys(store.namespace, name)
            finished = await self._finished_ids(keys, sub_live)
            async with redis.pipeline(transaction=True) as pipe:
                for w in sub_windows:
                    expire_at = store.expire_at(w.window)
                    if expire_at <= now_s:
                        continue
                    key = keys.window(w.window)
                    pipe.hset(
                        key,
                        mapping={
                            "used_tokens": w.used_tokens,
                            "reserved_tokens": w.reserved_tokens,
                            "used_micro": w.used_micro_usd,
                            "reserved_micro": w.reserved_micro_usd,
                        },
                    )
                    pipe.expireat(key, expire_at)
                    for marker, value in self._reached_markers(sub, keys, w):
                        pipe.set(marker, value, nx=True, exat=expire_at)
                    written += 1
                for r in sub_live:
                    if r.reservation_id in finished:
                        continue
                    pipe.hset(
                        keys.reservation(r.reservation_id),
                        mapping={
                            "subscription": name,
                            "task_id": "",
                            "tokens": r.tokens,
                            "micro": r.micro_usd,
                            "day": r.windows[0],
                            "month": r.windows[1],
                            "created_at": epoch_ms(r.created_at),
                            "expires_at": epoch_ms(r.expires_at),
                        },
                    )
                    pipe.zadd(keys.expiry, {r.reservation_id: epoch_ms(r.expires_at)})
                    restored += 1
                await pipe.execute()
            for r in sub_live:
                if r.reservation_id not in finished:
                    ttl = max(1, int(r.expires_at.timestamp() - now_s)) + store.tombstone_ttl_s
                    await redis.set(store.index_key(r.reservation_id), name, ex=ttl)
        return written, restored

    async def _finished_ids(self, keys: SubscriptionKeys, live: list[LiveReservation]) -> set[str]:
        """Ids among ``live`` that Redis already holds a tombstone of."""
        if not live:
            return set()
        async with self._store.redis.pipeline(transaction=False) as pipe:
            for r in live:
                pipe.exists(keys.tombstone(r.reservation_id))
            found = await pipe.execute()
        return {r.reservation_id for r, f in zip(live, found, strict=True) if f}

    @staticmethod
    def _reached_markers(
        sub: Subscription, keys: SubscriptionKeys, w: WindowTotals
    ) -> list[tuple[str, int]]:
        """Alert marker keys (and values) of the thresholds a window has reached."""
        limits = sub.limits.of(window_period(w.window))
        values = {
            "tokens": (w.used_tokens + w.reserved_tokens, limits.tokens),
            "usd": (w.used_micro_usd + w.reserved_micro_usd, limits.micro_usd),
        }
        return [
            (f"{keys.tag}:alert:{w.window}:{metric}:{t}", value)
            for metric, (value, limit) in values.items()
            for t in reached_thresholds(value, limit, sub.effective_thresholds)
        ]
