"""Atomic quota reservations in Redis.

Each subscription's keys share one hash tag, ``{namespace:subscription}``, so every Lua
script touches a single Redis Cluster slot:

* ``{ns:sub}:d:2026-11-22`` and ``{ns:sub}:m:2026-11`` -- window hashes (used and reserved
  tokens and micro-dollars), expiring ``window_grace_s`` after the window ends;
* ``{ns:sub}:r:<id>`` -- a live reservation; ``{ns:sub}:expiry`` -- live ids by expiry;
* ``{ns:sub}:done:<id>`` -- tombstone of a finished reservation (settled, released or
  expired), kept ``tombstone_ttl_s`` so late or repeated calls are recognised;
* ``{ns:sub}:alert:<window>:<metric>:<threshold>`` -- set once when an alert fires;
* ``{ns:sub}:frozen`` -- the freeze switch.

``ns:rsub:<id>`` maps a reservation id to its subscription, so ``settle`` and ``release``
need only the id.

After Redis lost its data, :mod:`services.quota.restore` writes these keys back from the
Postgres ledger (``tally quota rebuild``).

A reservation belongs to the windows current when it was made: one made at 23:59:59.999
counts in that day, and its settle after midnight corrects that day, not the next one.
Actual usage therefore always lands in the windows that were reserved in. The time is
read from the injected clock in Python and passed to the scripts.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from services.quota.fallback import fallback_micros
from services.quota.keys import SubscriptionKeys
from services.quota.results import (
    ReleaseResult,
    ReserveResult,
    SettleResult,
)
from services.quota.subscriptions import (
    NAME_PATTERN,
    Subscription,
    SubscriptionsConfig,
    UnknownSubscriptionError,
)
from services.quota.windows import (
    PERIODS,
    Alert,
    Period,
    Usage,
    WindowUsage,
    epoch_ms,
    from_epoch_ms,
    retry_after,
    usd_to_micro,
    window_end,
    window_id,
)
from tally.events import TokenTotals
from tally.redis import RedisClient
from tally.registry import Prices

_LUA = Path(__file__).with_name("lua")
_MAX_ID_LENGTH = 200


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _claim_taken(raw: Any) -> bool:
    """Whether the claim-and-reserve script found the id held by another subscription."""
    return raw in ("claim_taken", b"claim_taken")


def _alerts(subscription: str, raw: Any) -> list[Alert]:
    # cjson encodes an empty Lua table as {}, hence the `or []`.
    return [
        Alert(subscription, period, window, metric, int(t), int(value), int(limit))
        for period, window, metric, t, value, limit in (raw or [])
    ]


@dataclass(frozen=True)
class PreparedReservation:
    """A reservation's keys and script arguments, ready to send (see ``QuotaStore.prepare``)."""

    sub: Subscription
    reservation_id: str
    tokens: int
    micro: int
    now: datetime
    windows: tuple[str, str]
    index: str
    index_ttl: int
    keys: list[str]
    args: list[str | int]

    @property
    def claim_keys(self) -> list[str]:
        """KEYS of the claim-and-reserve script: the reserve script's, then the index."""
        return [*self.keys, self.index]

    @property
    def claim_args(self) -> list[str | int]:
        """ARGV of the claim-and-reserve script: the reserve script's, then the index's
        time to live."""
        return [*self.args, self.index_ttl]


class QuotaStore:
    """Reservations, settlements and limits of subscriptions, kept in Redis.

    Args:
        redis: an asyncio Redis client (responses decoded or not).
        subscriptions: the configured subscriptions.
        namespace: prefix of every key, so several deployments or tests share a Redis.
        clock: returns the current aware datetime; windows and expiries follow it.
        tombstone_ttl_s: how long finished reservation ids are remembered.
        window_grace_s: how long a window's keys outlive the window's end.
        fallback: per subscription, the price of tokens no price was known for
            (`services.quota.fallback`); a subscription without one charges them nothing.
    """

    def __init__(
        self,
        redis: RedisClient,
        subscriptions: SubscriptionsConfig | Iterable[Subscription],
        *,
        namespace: str = "tally",
        clock: Callable[[], datetime] = utc_now,
        tombstone_ttl_s: int = 2 * 86400,
        window_grace_s: int = 3 * 86400,
        fallback: Mapping[str, Prices] | None = None,
    ) -> None:
        if not re.match(NAME_PATTERN, namespace):
            raise ValueError(f"namespace must match {NAME_PATTERN}: {namespace!r}")
        items = (
            subscriptions.subscriptions
            if isinstance(subscriptions, SubscriptionsConfig)
            else tuple(subscriptions)
        )
        self._subscriptions = {s.name: s for s in items}
        self._redis = redis
        self._namespace = namespace
        self._clock = clock
        self._tombstone_ttl_s = tombstone_ttl_s
        self._window_grace_s = window_grace_s
        self._fallback = dict(fallback or {})
        common = (_LUA / "common.lua").read_text()
        self._reserve, self._settle, self._release = (
            redis.register_script(common + "\n" + (_LUA / f"{name}.lua").read_text())
            for name in ("reserve", "settle", "release")
        )
        #: On one server, the id's claim and the reservation are one script: one round
        #: trip. A cluster keeps the index key in another slot, so it claims separately.
        self._cluster = isinstance(redis, RedisCluster)
        self._claim_reserve = redis.register_script(
            "\n".join((_LUA / f"{name}.lua").read_text() for name in ("common", "claim", "reserve"))
        )

    @property
    def namespace(self) -> str:
        """The prefix of every key this store writes."""
        return self._namespace

    @property
    def redis(self) -> RedisClient:
        """The Redis client the store's keys live in."""
        return self._redis

    @property
    def tombstone_ttl_s(self) -> int:
        """How long, in seconds, finished reservation ids are remembered."""
        return self._tombstone_ttl_s

    def now(self) -> datetime:
        """The current time by the store's clock (the one windows and expiries follow)."""
        return self._clock()

    async def windows_of(self, reservation_id: str) -> tuple[str, str] | None:
        """The ``(day, month)`` window ids a live or finished reservation was made in."""
        found = await self._locate(reservation_id)
        return found[1] if found else None

    def subscription(self, name: str) -> Subscription:
        """The configured subscription ``name``; raises ``UnknownSubscriptionError``."""
        try:
            return self._subscriptions[name]
        except KeyError:
            raise UnknownSubscriptionError(name) from None

    async def reserve(
        self,
        subscription: str,
        tokens: int,
        cost_usd: float,
        *,
        reservation_id: str,
        ttl_s: int,
        task_id: str | None = None,
    ) -> ReserveResult:
        """Reserves ``tokens`` and ``cost_usd`` in the current day and month windows.

        One script checks the freeze switch and all four limits (tokens and dollars, day and
        month; used + reserved + requested must stay within each), then reserves in both
        windows, or nothing. The reservation expires after ``ttl_s`` unless settled or
        released first (see :meth:`sweep`). Repeating a reservation id returns the
        original outcome and adds nothing.

        Raises:
            UnknownSubscriptionError: ``subscription`` is not configured.
            ValueError: negative amounts, a non-positive ttl or an unusable id.
        """
        ask = self.prepare(subscription, tokens, cost_usd, reservation_id, ttl_s, task_id)
        if not self._cluster:
            raw = await self._claim_reserve(keys=ask.claim_keys, args=ask.claim_args)
            if not _claim_taken(raw):
                return self.outcome(ask, raw)
            refused = await self.claim_taken(ask)
        else:
            claimed = await self._redis.set(ask.index, subscription, nx=True, ex=ask.index_ttl)
            refused = None if claimed else await self.claim_taken(ask)
        if refused is not None:
            return refused
        return self.outcome(ask, await self._reserve(keys=ask.keys, args=ask.args))

    def prepare(
        self,
        subscription: str,
        tokens: int,
        cost_usd: float,
        reservation_id: str,
        ttl_s: int,
        task_id: str | None = None,
    ) -> PreparedReservation:
        """The Redis keys and script arguments of a reservation (see :meth:`reserve`).

        Raises:
            UnknownSubscriptionError: ``subscription`` is not configured.
            ValueError: negative amounts, a non-positive ttl or an unusable id.
        """
        sub = self.subscription(subscription)
        if tokens < 0 or cost_usd < 0 or ttl_s <= 0:
            raise ValueError("tokens and cost must be >= 0 and ttl_s > 0")
        self._check_id(reservation_id)
        now = self._clock()
        windows = (window_id("day", now), window_id("month", now))
        micro = usd_to_micro(cost_usd)
        keys = SubscriptionKeys(self._namespace, subscription)
        expires_at = now + timedelta(seconds=ttl_s)
        args: list[str | int] = [
            reservation_id,
            tokens,
            micro,
            epoch_ms(now),
            epoch_ms(expires_at),
            *windows,
            *(self.expire_at(w) for w in windows),
            "1" if sub.hard else "0",
            subscription,
            task_id or "",
            *self._policy(sub),
        ]
        return PreparedReservation(
            sub,
            reservation_id,
            tokens,
            micro,
            now,
            windows,
            self.index_key(reservation_id),
            ttl_s + self._tombstone_ttl_s + 86400,
            keys.script_keys(reservation_id, windows, sub.effective_thresholds),
            args,
        )

    async def claim_taken(self, ask: PreparedReservation) -> ReserveResult | None:
        """After the id's claim found it taken: the refusal if another subscription holds
        a reservation under it, else None (the id is ours, or free to take over)."""
        subscription = ask.sub.name
        owner = _text(await self._redis.get(ask.index))
        if owner in (None, subscription):
            return None
        # An id refused by another subscription holds nothing there: a fallback to this
        # subscription may reuse it. One reserved or finished there may not.
        if await self._locate(ask.reservation_id, owner) is not None:
            usage = await self.usage(subscription)
            return ReserveResult(
                False, ask.reservation_id, "reservation_id_in_use", None, [], usage
            )
        await self._redis.set(ask.index, subscription, ex=ask.index_ttl)
        return None

    def outcome(self, ask: PreparedReservation, raw: str) -> ReserveResult:
        """What the reserve script's answer ``raw`` means for the reservation."""
        sub, tokens, micro, now = ask.sub, ask.tokens, ask.micro, ask.now
        out = json.loads(raw)
        usage = self._usage(sub, ask.windows, out["windows"], bool(out["frozen"]))
        exceeded = tuple(out.get("exceeded") or ())
        expiry = from_epoch_ms(int(out["expires_at"])) if out.get("expires_at") else None
        if out["status"] == "duplicate":
            return ReserveResult(
                True, ask.reservation_id, None, None, [], usage, expiry, duplicate=True
            )
        if out["status"] == "rejected":
            retry = retry_after(self._blocking(sub, exceeded, tokens, micro), now)
            return ReserveResult(
                False, ask.reservation_id, out["reason"], retry, [], usage, None, exceeded
            )
        alerts = _alerts(sub.name, out.get("alerts"))
        return ReserveResult(True, ask.reservation_id, None, None, alerts, usage, expiry, exceeded)

    async def reserve_many(self, asks: list[PreparedReservation]) -> list[ReserveResult]:
        """Make prepared reservations together, as :meth:`reserve` makes each.

        On one server, each id's claim and reservation are one script and the batch's
        scripts go in one pipeline: one round trip for the lot. On a cluster the ids are
        claimed in one pipeline and the scripts run on their slots' masters at once. An
        id another subscription holds is refused as :meth:`reserve` refuses it.
        """
        if not self._cluster:
            return await self._claim_and_reserve(asks)
        async with self._redis.pipeline(transaction=False) as pipe:
            for ask in asks:
                pipe.set(ask.index, ask.sub.name, nx=True, ex=ask.index_ttl)
            claims = await pipe.execute()
        refused = [
            None if claimed else await self.claim_taken(ask)
            for ask, claimed in zip(asks, claims, strict=True)
        ]
        to_run = [ask for ask, r in zip(asks, refused, strict=True) if r is None]
        # redis-py refuses scripts in a cluster pipeline: each runs on its own slot's
        # master, all at once.
        answers = iter(
            await asyncio.gather(*(self._reserve(keys=ask.keys, args=ask.args) for ask in to_run))
        )
        return [
            r if r is not None else self.outcome(ask, next(answers))
            for ask, r in zip(asks, refused, strict=True)
        ]

    async def _claim_and_reserve(self, asks: list[PreparedReservation]) -> list[ReserveResult]:
        """:meth:`reserve_many` on one server: every claim-and-reserve script in one
        pipeline (``EVALSHA`` alone: redis-py would first ask whether the script is
        loaded, a round trip of its own; it is loaded only if the server says it is not).
        """
        answers = await self._evalsha_all(asks)
        missing = [i for i, a in enumerate(answers) if isinstance(a, NoScriptError)]
        if missing:
            await self._redis.script_load(self._claim_reserve.script)
            again = await self._evalsha_all([asks[i] for i in missing])
            for i, answer in zip(missing, again, strict=True):
                answers[i] = answer
        results: list[ReserveResult] = []
        for ask, raw in zip(asks, answers, strict=True):
            if isinstance(raw, Exception):
                raise raw
            if not _claim_taken(raw):
                results.append(self.outcome(ask, raw))
                continue
            # Rare: the id is held by another subscription. Judged as reserve() judges it.
            refused = await self.claim_taken(ask)
            results.append(
                refused
                if refused is not None
                else self.outcome(ask, await self._reserve(keys=ask.keys, args=ask.args))
            )
        return results

    async def _evalsha_all(self, asks: list[PreparedReservation]) -> list[Any]:
        if not asks:
            return []
        sha = self._claim_reserve.sha
        async with self._redis.pipeline(transaction=False) as pipe:
            for ask in asks:
                keys = ask.claim_keys
                pipe.evalsha(sha, len(keys), *keys, *ask.claim_args)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
            return answers

    async def settle(
        self,
        reservation_id: str,
        actual_tokens: int,
        actual_cost_usd: float = 0.0,
        *,
        actual_micros: int | None = None,
        unpriced: TokenTotals | None = None,
    ) -> SettleResult:
        """Records a finished run's actual usage against its reservation.

        The reserved amounts leave the windows the reservation was made in and the actuals
        are added as used to those same windows, even if the clock has since moved into a
        new day or month. If the reservation was already released or swept, the actuals
        are still recorded (the work happened) and nothing is returned a second time;
        settling again is a no-op reporting ``already_settled``.

        Args:
            actual_micros: the priced cost in micro-dollars (wins over ``actual_cost_usd``).
            unpriced: tokens no price was known for: charged at the subscription's
                fallback price on top (``SettleResult.fallback_micros``).
        """
        micros = usd_to_micro(actual_cost_usd) if actual_micros is None else actual_micros
        if actual_tokens < 0 or micros < 0:
            raise ValueError("actual usage must be >= 0")
        for _ in range(3):
            found = await self._locate(reservation_id)
            if found is None:
                return SettleResult(reservation_id, "unknown")
            sub, windows = found
            fallback = fallback_micros(self._fallback, sub.name, unpriced or TokenTotals())
            micro = micros + fallback
            keys = SubscriptionKeys(self._namespace, sub.name)
            args: list[str | int] = [
                reservation_id,
                actual_tokens,
                micro,
                epoch_ms(self._clock()),
                self._tombstone_ttl_s,
                *windows,
                *(self.expire_at(w) for w in windows),
                *self._policy(sub),
            ]
            keys_list = keys.script_keys(reservation_id, windows, sub.effective_thresholds)
            out = json.loads(await self._settle(keys=keys_list, args=args))
            if out["status"] == "conflict":
                continue  # the id was finished and reused between lookup and script
            if out["status"] == "unknown":
                return SettleResult(reservation_id, "unknown", sub.name)
            return SettleResult(
                reservation_id,
                out["status"],
                sub.name,
                windows,
                int(out["tokens"]),
                int(out["micro"]),
                int(out["actual_tokens"]),
                int(out["actual_micro"]),
                _alerts(sub.name, out.get("alerts")),
                fallback,
            )
        raise RuntimeError(f"reservation {reservation_id!r} kept changing during settle")

    def fallback_micros(self, subscription: str, unpriced: TokenTotals) -> int:
        """What ``unpriced`` tokens cost at ``subscription``'s fallback price."""
        return fallback_micros(self._fallback, subscription, unpriced)

    async def release(self, reservation_id: str) -> ReleaseResult:
        """Gives a live reservation back unused; repeating it (or after settle) is a no-op."""
        return await self._finish(reservation_id, "released", self._clock())

    async def sweep(self, now: datetime | None = None) -> list[str]:
        """Releases every reservation whose expiry has passed; returns their ids.

        Each reservation is released atomically by the same script as :meth:`release`,
        leaving an ``expired`` tombstone, so a late settle is still recorded.
        """
        return [r.reservation_id for r in await self.sweep_expired(now)]

    async def sweep_expired(self, now: datetime | None = None) -> list[ReleaseResult]:
        """Like :meth:`sweep`, returning what each expired reservation gave back."""
        now = now or self._clock()
        swept: list[ReleaseResult] = []
        for name in self._subscriptions:
            keys = SubscriptionKeys(self._namespace, name)
            while True:
                due = await self._redis.zrangebyscore(
                    keys.expiry, "-inf", epoch_ms(now), start=0, num=200
                )
                if not due:
                    break
                for raw in due:
                    rid = _text(raw) or ""
                    result = await self._finish(rid, "expired", now, subscription=name)
                    if result.status == "expired":
                        swept.append(result)
        return swept

    async def freeze(self, subscription: str) -> None:
        """Refuses every new reservation of ``subscription`` until :meth:`unfreeze`."""
        self.subscription(subscription)
        await self._redis.set(SubscriptionKeys(self._namespace, subscription).frozen, "1")

    async def unfreeze(self, subscription: str) -> None:
        """Accepts reservations of ``subscription`` again."""
        self.subscription(subscription)
        await self._redis.delete(SubscriptionKeys(self._namespace, subscription).frozen)

    async def usage(self, subscription: str) -> Usage:
        """The current day and month windows of ``subscription``, read as one snapshot."""
        sub = self.subscription(subscription)
        now = self._clock()
        windows = (window_id("day", now), window_id("month", now))
        keys = SubscriptionKeys(self._namespace, subscription)
        fields = ("used_tokens", "reserved_tokens", "used_micro", "reserved_micro")
        async with self._redis.pipeline(transaction=True) as pipe:
            for window in windows:
                pipe.hmget(keys.window(window), fields)
            pipe.exists(keys.frozen)
            day, month, frozen = await pipe.execute()
        raw = [
            {f: int(v or 0) for f, v in zip(fields, values, strict=True)} for values in (day, month)
        ]
        return self._usage(sub, windows, raw, bool(frozen))

    async def _finish(
        self,
        reservation_id: str,
        final_state: Literal["released", "expired"],
        now: datetime,
        *,
        subscription: str | None = None,
    ) -> ReleaseResult:
        for _ in range(3):
            found = await self._locate(reservation_id, subscription)
            if found is None:
                if subscription is not None:
                    # An expiry entry without reservation or tombstone: nothing to give back.
                    expiry = SubscriptionKeys(self._namespace, subscription).expiry
                    await self._redis.zrem(expiry, reservation_id)
                return ReleaseResult(reservation_id, "unknown", subscription)
            sub, windows = found
            keys = SubscriptionKeys(self._namespace, sub.name).script_keys(reservation_id, windows)
            args: list[str | int] = [
                reservation_id,
                final_state,
                epoch_ms(now),
                self._tombstone_ttl_s,
                *windows,
            ]
            out = json.loads(await self._release(keys=keys, args=args))
            if out["status"] == "conflict":
                continue  # the id was finished and reused between lookup and script
            if out["status"] == "not_expired":
                return ReleaseResult(reservation_id, "unknown", sub.name)
            return ReleaseResult(
                reservation_id,
                out["status"],
                sub.name,
                int(out.get("tokens") or 0),
                int(out.get("micro") or 0),
            )
        raise RuntimeError(f"reservation {reservation_id!r} kept changing during release")

    async def _locate(
        self, reservation_id: str, subscription: str | None = None
    ) -> tuple[Subscription, tuple[str, str]] | None:
        """The subscription and windows of a live or finished reservation, if known."""
        name = subscription or _text(await self._redis.get(self.index_key(reservation_id)))
        if name is None or name not in self._subscriptions:
            return None
        keys = SubscriptionKeys(self._namespace, name)
        for key in (keys.reservation(reservation_id), keys.tombstone(reservation_id)):
            day, month = (_text(v) for v in await self._redis.hmget(key, ["day", "month"]))
            if day and month:
                return self._subscriptions[name], (day, month)
        return None

    def index_key(self, reservation_id: str) -> str:
        """The key mapping ``reservation_id`` to its subscription (``ns:rsub:<id>``)."""
        return f"{self._namespace}:rsub:{reservation_id}"

    def expire_at(self, window: str) -> int:
        """When the keys of ``window`` expire (epoch seconds): its end plus the grace."""
        return int(window_end(window).timestamp()) + self._window_grace_s

    @staticmethod
    def _check_id(reservation_id: str) -> None:
        if not reservation_id or len(reservation_id) > _MAX_ID_LENGTH:
            raise ValueError(f"reservation_id must have 1 to {_MAX_ID_LENGTH} characters")

    @staticmethod
    def _blocking(
        sub: Subscription, exceeded: tuple[str, ...], tokens: int, micro: int
    ) -> list[tuple[Period, int, int]]:
        """(period, requested, limit) of each exceeded limit, e.g. from ``"day_tokens"``."""
        blocking: list[tuple[Period, int, int]] = []
        for name in exceeded:
            period: Period = "day" if name.startswith("day_") else "month"
            limits = sub.limits.of(period)
            if name.endswith("_tokens") and limits.tokens is not None:
                blocking.append((period, tokens, limits.tokens))
            elif name.endswith("_usd") and limits.micro_usd is not None:
                blocking.append((period, micro, limits.micro_usd))
        return blocking

    @staticmethod
    def _policy(sub: Subscription) -> list[int]:
        """Limits (-1 = unlimited) and thresholds, in the scripts' ``read_policy`` order."""
        limits = []
        for period in PERIODS:
            window = sub.limits.of(period)
            limits += [
                -1 if window.tokens is None else window.tokens,
                -1 if window.micro_usd is None else window.micro_usd,
            ]
        thresholds = sub.effective_thresholds
        return [*limits, len(thresholds), *thresholds]

    @staticmethod
    def _usage(
        sub: Subscription, windows: tuple[str, str], raw: list[dict[str, int]], frozen: bool
    ) -> Usage:
        def window_usage(period: Period, window: str, c: dict[str, int]) -> WindowUsage:
            limits = sub.limits.of(period)
            return WindowUsage(
                period=period,
                window=window,
                used_tokens=int(c["used_tokens"]),
                reserved_tokens=int(c["reserved_tokens"]),
                used_micro_usd=int(c["used_micro"]),
                reserved_micro_usd=int(c["reserved_micro"]),
                limit_tokens=limits.tokens,
                limit_micro_usd=limits.micro_usd,
            )

        day, month = (window_usage(p, w, c) for p, w, c in zip(PERIODS, windows, raw, strict=True))
        return Usage(sub.name, frozen, day, month)
