"""Quota subscribers: reserve, release and settle, answer usage questions, raise alerts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from services.quota.ledger import QuotaLedger
from services.quota.rebuild import ledger_state
from services.quota.reservations import PreparedReservation, QuotaStore
from services.quota.restore import QuotaRestorer
from services.quota.results import ReserveResult
from services.quota.subscriptions import UnknownSubscriptionError
from services.quota.switches import FreezeSwitches
from services.quota.windows import Alert, Usage, micro_to_usd, usd_to_micro
from tally import metrics
from tally.bus import Bus
from tally.errors import PermanentError, TransientError
from tally.events import (
    QuotaAlert,
    QuotaSettled,
    ReleaseReply,
    ReleaseRequest,
    ReserveManyReply,
    ReserveManyRequest,
    ReserveReply,
    ReserveRequest,
    RunRecorded,
    UsageReply,
    UsageRequest,
)
from tally.events.assign import (
    QUOTA_FREED,
    FreezeReply,
    FreezeRequest,
    QuotaFreed,
    RebuildReply,
    RebuildRequest,
)
from tally.events.envelope import Event
from tally.replies import answer_refusals

log = structlog.get_logger(__name__)


def usage_dict(u: Usage, thresholds: tuple[int, ...]) -> dict[str, Any]:
    """A subscription's two windows and the alert thresholds in force (percent)."""

    def window(w: Any) -> dict[str, Any]:
        return {
            "window": w.window,
            "used_tokens": w.used_tokens,
            "reserved_tokens": w.reserved_tokens,
            "used_usd": micro_to_usd(w.used_micro_usd),
            "reserved_usd": micro_to_usd(w.reserved_micro_usd),
            "limit_tokens": w.limit_tokens,
            "limit_usd": None if w.limit_micro_usd is None else micro_to_usd(w.limit_micro_usd),
            # exact amounts: the dollars above are derived from these
            "used_micros": w.used_micro_usd,
            "reserved_micros": w.reserved_micro_usd,
            "limit_micros": w.limit_micro_usd,
            "resets_at": w.resets_at.isoformat(),
        }

    return {
        "subscription": u.subscription,
        "frozen": u.frozen,
        "day": window(u.day),
        "month": window(u.month),
        "alert_thresholds": list(thresholds),
    }


async def publish_alerts(bus: Bus, cause: Event, alerts: list[Alert] | tuple[Alert, ...]) -> None:
    for a in alerts:
        usd = a.metric == "usd"
        await bus.publish(
            cause.child(
                QuotaAlert,
                event_id=f"alert-{a.subscription}-{a.window}-{a.metric}-{a.threshold}",
                subscription=a.subscription,
                window=a.period,
                window_id=a.window,
                metric=a.metric,
                threshold_pct=a.threshold,
                used=micro_to_usd(a.value) if usd else a.value,
                limit=micro_to_usd(a.limit) if usd else a.limit,
            )
        )


async def announce_freed(bus: Bus, cause: Event | None, subscription: str, why: str) -> None:
    """Tell the assigner (core NATS, not persisted) that ``subscription`` has room again."""
    notice = (
        cause.child(QuotaFreed, subscription=subscription, cause=why)
        if cause
        else QuotaFreed(subscription=subscription, cause=why, source=bus.service)
    )
    await bus.broker.publish(notice.to_json(), bus.catalog.subject(QUOTA_FREED))


async def sweep_once(bus: Bus, store: QuotaStore, ledger: QuotaLedger) -> int:
    """Release expired reservations, write each to the ledger, announce the room; count."""
    expired = await store.sweep_expired()
    now = store.now()
    # Written together: the ledger commits concurrent appends as one batch.
    await asyncio.gather(
        *(
            ledger.append(
                "expire",
                res.reservation_id,
                res.subscription,
                res.tokens,
                res.micro_usd,
                now,
            )
            for res in expired
            if res.subscription  # always set for an expired reservation
        )
    )
    for name in sorted({r.subscription for r in expired if r.subscription}):
        await announce_freed(bus, None, name, "expiry")
    return len(expired)


async def export_usage(store: QuotaStore, names: list[str]) -> None:
    """Set the usage gauges Prometheus scrapes (and the alert rules in ``deploy/`` read)."""
    for name in names:
        u = await store.usage(name)
        metrics.QUOTA_FROZEN.labels(name).set(1 if u.frozen else 0)
        for w in (u.day, u.month):
            for unit, used, limit in (
                ("tokens", w.used_tokens + w.reserved_tokens, w.limit_tokens),
                ("usd", w.used_micro_usd + w.reserved_micro_usd, w.limit_micro_usd),
            ):
                if limit:
                    metrics.QUOTA_USED.labels(name, w.period, unit).set(used / limit)


async def rebuild_from_ledger(
    store: QuotaStore,
    ledger: QuotaLedger,
    names: list[str],
    default_ttl_s: int,
    switches: FreezeSwitches | None = None,
) -> RebuildReply:
    """Restore Redis from the ledger rows of this month and the previous one.

    With ``switches``, the recorded freeze switches are restored too (a subscription with
    no record keeps whatever Redis holds).
    """
    now = store.now()
    previous = (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    windows, live = ledger_state(await ledger.rows_since(previous), default_ttl_s)
    known = set(names)
    windows = [w for w in windows if w.subscription in known]
    live = [r for r in live if r.subscription in known]
    written, restored = await QuotaRestorer(store).restore(windows, live)
    recorded = await switches.all() if switches is not None else {}
    for name, frozen in recorded.items():
        if name in known:
            await (store.freeze(name) if frozen else store.unfreeze(name))
    per_sub = [
        {
            "subscription": name,
            "windows": sum(1 for w in windows if w.subscription == name),
            "reservations": sum(1 for r in live if r.subscription == name),
            "frozen": recorded.get(name, False),
        }
        for name in names
    ]
    return RebuildReply(
        windows=written,
        reservations=restored,
        subscriptions=per_sub,
        frozen=sorted(n for n, f in recorded.items() if f and n in known),
    )


def register_admin(
    bus: Bus,
    store: QuotaStore,
    ledger: QuotaLedger,
    names: list[str],
    default_ttl_s: int,
    switches: FreezeSwitches,
) -> None:
    """Subscribe the operator's requests: freeze/unfreeze and rebuild from the ledger."""

    @bus.responder(FreezeRequest)
    @answer_refusals
    async def on_freeze(r: FreezeRequest) -> FreezeReply:
        try:
            store.subscription(r.subscription)
        except UnknownSubscriptionError as exc:
            raise PermanentError(
                f"unknown subscription {r.subscription!r}; known: {', '.join(names)}"
            ) from exc
        flip = store.freeze if r.frozen else store.unfreeze
        try:
            await switches.set(r.subscription, r.frozen, lambda: flip(r.subscription))
        except SQLAlchemyError as exc:
            raise TransientError(f"freeze switch not recorded: {exc}") from exc
        log.info("quota_frozen" if r.frozen else "quota_unfrozen", subscription=r.subscription)
        if not r.frozen:
            await announce_freed(bus, r, r.subscription, "unfreeze")
        return FreezeReply(subscription=r.subscription, frozen=r.frozen)

    # One rebuild at a time: two at once would only write the same counters twice.
    @bus.responder(RebuildRequest, concurrency=1)
    async def on_rebuild(r: RebuildRequest) -> RebuildReply:
        reply = await rebuild_from_ledger(store, ledger, names, default_ttl_s, switches)
        log.info(
            "quota_rebuilt",
            windows=reply.windows,
            reservations=reply.reservations,
            frozen=reply.frozen,
        )
        for name in names:
            await announce_freed(bus, r, name, "rebuild")
        return reply


async def _settle_from_ledger(store: QuotaStore, ledger: QuotaLedger, e: RunRecorded) -> None:
    """Record a run whose reservation Redis no longer knows (its data was lost, or the
    finished reservation's tombstone expired): the ledger keeps the usage, so the next
    ``tally quota rebuild`` counts it, and the gap is loud until then. A reservation the
    ledger never saw either is refused with the reason (dead-lettered).

    Raises:
        PermanentError: neither Redis nor the ledger knows the reservation.
    """
    rid = e.reservation_id or ""
    reserved = await ledger.reserved(rid)
    if reserved is None:
        raise PermanentError(f"reservation {rid} is unknown to quota (not in Redis nor the ledger)")
    subscription, windows = reserved
    micros = e.micros + store.fallback_micros(subscription, e.unpriced_tokens)
    metrics.QUOTA_SETTLED_FROM_LEDGER.labels(subscription).inc()
    log.warning(
        "settled_from_ledger",
        reservation_id=rid,
        subscription=subscription,
        tokens=e.tokens.total,
        hint="Redis no longer holds this reservation: run `tally quota rebuild`",
    )
    await ledger.append(
        "resettle",
        rid,
        subscription,
        e.tokens.total,
        micros,
        e.finished_at,
        windows=windows,
        key=f"resettle:{rid}:{e.tokens.total}:{micros}",
    )


def register(
    bus: Bus,
    store: QuotaStore,
    ledger: QuotaLedger,
    names: list[str],
    *,
    concurrency: int = 64,
) -> None:
    """Subscribe the quota service's handlers on ``bus``.

    Args:
        concurrency: reserve and release requests answered at once.
    """

    #: Reservations being made at once, however they were asked for (one by one or in
    #: batches): each holds a Redis connection while it runs.
    slots = asyncio.Semaphore(concurrency)

    async def ledgered(r: ReserveRequest, res: ReserveResult) -> ReserveReply:
        """Count, ledger and alert a reservation's outcome; the reply to send for it."""
        metrics.RESERVATIONS.labels(r.subscription, "ok" if res.ok else "refused").inc()
        if res.ok:
            # The reply waits for the ledger row's commit: "ok" means reserved and ledgered.
            # A repeated id writes its row again (a no-op if there), so a client retrying
            # after an error reply heals a row whose commit failed the first time.
            windows = (
                await store.windows_of(r.reservation_id)
                if res.duplicate
                else (res.usage.day.window, res.usage.month.window)
            )
            try:
                await ledger.append(
                    "reserve",
                    r.reservation_id,
                    r.subscription,
                    r.tokens,
                    usd_to_micro(r.cost_usd),
                    store.now(),
                    windows=windows,
                    expires_at=res.expires_at,
                )
            except SQLAlchemyError as exc:
                # Held in Redis but not ledgered: the caller gets an error, not "ok", and
                # may retry with the same id; unretried, the reservation expires.
                raise TransientError(f"ledger write failed: {type(exc).__name__}") from exc
        await publish_alerts(bus, r, res.alerts)
        return ReserveReply(
            ok=res.ok,
            reservation_id=res.reservation_id,
            subscription=r.subscription,
            reason=res.reason or "",
            retry_after=res.retry_after,
            expires_at=res.expires_at,
        )

    @bus.responder(ReserveRequest, concurrency=concurrency)
    async def on_reserve(r: ReserveRequest) -> ReserveReply:
        async with slots:
            try:
                res = await store.reserve(
                    r.subscription,
                    r.tokens,
                    r.cost_usd,
                    reservation_id=r.reservation_id,
                    ttl_s=r.ttl_s,
                    task_id=r.task_id,
                )
            except UnknownSubscriptionError as exc:
                raise PermanentError(f"unknown subscription {r.subscription!r}") from exc
            return await ledgered(r, res)

    @bus.responder(ReserveManyRequest, concurrency=concurrency)
    async def on_reserve_many(r: ReserveManyRequest) -> ReserveManyReply:
        """Every reservation at once: one message each way, two Redis round trips for the
        lot, their ledger rows committed together. One naming an unknown subscription is
        refused with the reason; if any could not be ledgered the whole request fails
        (the caller asks again: a repeated id reserves nothing twice)."""
        replies: list[ReserveReply | None] = [None] * len(r.reservations)
        asks: list[tuple[int, PreparedReservation]] = []
        for i, x in enumerate(r.reservations):
            try:
                ask = store.prepare(
                    x.subscription, x.tokens, x.cost_usd, x.reservation_id, x.ttl_s, x.task_id
                )
            except UnknownSubscriptionError:
                replies[i] = ReserveReply(
                    ok=False,
                    reservation_id=x.reservation_id,
                    subscription=x.subscription,
                    reason=f"unknown subscription {x.subscription!r}",
                )
                continue
            asks.append((i, ask))
        async with slots:
            results = await store.reserve_many([ask for _, ask in asks])
            made = await asyncio.gather(
                *(
                    ledgered(r.reservations[i], res)
                    for (i, _), res in zip(asks, results, strict=True)
                )
            )
        for (i, _), reply in zip(asks, made, strict=True):
            replies[i] = reply
        return ReserveManyReply(replies=[x for x in replies if x is not None])

    @bus.responder(ReleaseRequest, concurrency=concurrency)
    async def on_release(r: ReleaseRequest) -> ReleaseReply:
        res = await store.release(r.reservation_id)
        if res.subscription and res.status == "released":
            await ledger.append(
                "release",
                r.reservation_id,
                res.subscription,
                res.tokens,
                res.micro_usd,
                store.now(),
            )
            await announce_freed(bus, r, res.subscription, "release")
        return ReleaseReply(reservation_id=r.reservation_id, status=res.status)

    @bus.responder(UsageRequest)
    async def on_usage(r: UsageRequest) -> UsageReply:
        return UsageReply(
            subscriptions=[
                usage_dict(await store.usage(name), store.subscription(name).effective_thresholds)
                for name in names
            ]
        )

    @bus.on(RunRecorded)
    async def on_recorded(e: RunRecorded) -> None:
        if not e.reservation_id:
            return
        res = await store.settle(
            e.reservation_id,
            e.tokens.total,
            actual_micros=e.micros,
            unpriced=e.unpriced_tokens,
        )
        if res.subscription is None:
            await _settle_from_ledger(store, ledger, e)
            return
        # A run totalled again (late events) settles again, its actuals cumulative: the
        # ledger keeps one row per cumulative figure, and a rebuild takes the largest.
        again = res.status in ("resettled", "already_settled")
        totals_key = f"{e.reservation_id}:{res.actual_tokens}:{res.actual_micro_usd}"
        if res.status == "already_settled" and await ledger.holds_settle(
            e.reservation_id, res.actual_tokens, f"resettle:{totals_key}"
        ):
            return  # a redelivery: Redis and the ledger both have it
        if res.fallback_micro_usd and res.status != "already_settled":
            metrics.QUOTA_FALLBACK_PRICED.labels(res.subscription).inc()
            log.warning(
                "settled_at_fallback_price",
                reservation_id=e.reservation_id,
                subscription=res.subscription,
                unpriced_tokens=e.unpriced_tokens.total,
                fallback_usd=micro_to_usd(res.fallback_micro_usd),
            )
        await ledger.append(
            "resettle" if again else "settle",
            e.reservation_id,
            res.subscription,
            res.actual_tokens,
            res.actual_micro_usd,
            e.finished_at,
            windows=res.windows,
            key=f"resettle:{totals_key}" if again else None,
            fallback_micros=res.fallback_micro_usd,
        )
        await publish_alerts(bus, e, res.alerts)
        if res.status == "settled" and (
            res.actual_tokens < res.reserved_tokens or res.actual_micro_usd < res.reserved_micro_usd
        ):
            await announce_freed(bus, e, res.subscription, "settle")
        await bus.publish(
            e.child(
                QuotaSettled,
                event_id=f"settled-{totals_key}" if again else f"settled-{e.reservation_id}",
                reservation_id=e.reservation_id,
                subscription=res.subscription,
                status=res.status,
                reserved_tokens=res.reserved_tokens,
                reserved_cost_usd=micro_to_usd(res.reserved_micro_usd),
                actual_tokens=res.actual_tokens,
                actual_cost_usd=res.actual_cost_usd,
                actual_cost_micros=res.actual_micro_usd,
                fallback_cost_micros=res.fallback_micro_usd,
            )
        )
