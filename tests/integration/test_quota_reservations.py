"""QuotaStore against a real Redis: limits hold under concurrency, accounting never drifts.

Redis comes from ``TALLY_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Each test works
in its own random namespace and deletes its keys afterwards. Without Redis the tests skip,
except in CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from services.quota import handlers
from services.quota.reservations import QuotaStore
from services.quota.restore import QuotaRestorer
from services.quota.subscriptions import Subscription, UnknownSubscriptionError
from services.quota.windows import WindowCounters, usd_to_micro, window_end, window_id
from tally import metrics

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("TALLY_REDIS_URL", "redis://127.0.0.1:6379/0")
# Windows are keyed by the store's clock but expire by Redis's real clock, so test days lie
# in the current month: the 10th at noon leaves room to move a day either way.
NOON = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)
MONTH_END = window_end(window_id("month", NOON))
GRACE_S = 40 * 86400


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOON) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def sub(
    name: str = "team", *, enforcement: str = "hard", **limits: dict[str, float]
) -> Subscription:
    return Subscription.model_validate(
        {"name": name, "kind": "payg", "enforcement": enforcement, "limits": limits}
    )


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis(connection_pool=BlockingConnectionPool.from_url(REDIS_URL, max_connections=64))
    try:
        await client.ping()
    except (RedisConnectionError, OSError) as exc:
        await client.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is unreachable in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield client
    await client.aclose()


async def drop_namespace(redis: Redis, namespace: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"*{namespace}*", count=1000)]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
async def make_store(redis: Redis) -> AsyncIterator[Callable[..., QuotaStore]]:
    namespaces: list[str] = []

    def make(*subscriptions: Subscription, clock: Clock | None = None) -> QuotaStore:
        namespace = f"test-{uuid.uuid4().hex[:12]}"
        namespaces.append(namespace)
        return QuotaStore(
            redis,
            subscriptions,
            namespace=namespace,
            clock=clock or Clock(),
            window_grace_s=GRACE_S,
        )

    yield make
    for namespace in namespaces:
        await drop_namespace(redis, namespace)


async def test_concurrent_reservations_never_pass_a_token_limit(make_store) -> None:
    store = make_store(sub(day={"tokens": 1_000_000}))
    results = await asyncio.gather(
        *(store.reserve("team", 7_000, 0, reservation_id=f"r{i}", ttl_s=600) for i in range(1000))
    )
    accepted = [r for r in results if r.ok]
    assert len(accepted) == 1_000_000 // 7_000  # 142: as many as fit, and no more
    usage = await store.usage("team")
    assert usage.day.reserved_tokens == usage.month.reserved_tokens == 142 * 7_000
    assert all(
        r.reason == "over_limit" and r.exceeded == ("day_tokens",) for r in results if not r.ok
    )


async def test_concurrent_reservations_never_pass_a_dollar_limit(make_store) -> None:
    store = make_store(sub(month={"usd": 50}))
    results = await asyncio.gather(
        *(store.reserve("team", 1, 0.07, reservation_id=f"r{i}", ttl_s=600) for i in range(1000))
    )
    assert sum(r.ok for r in results) == 714  # $49.98; a 715th would make $50.05
    usage = await store.usage("team")
    assert usage.month.reserved_micro_usd == 714 * 70_000
    assert usage.month.remaining_usd == pytest.approx(0.02)


async def test_a_reservation_takes_both_windows_or_neither(make_store) -> None:
    clock = Clock()
    store = make_store(sub(day={"tokens": 1000}, month={"tokens": 1500}), clock=clock)
    assert (await store.reserve("team", 900, 0, reservation_id="a", ttl_s=60)).ok
    await store.settle("a", 900, 0)
    clock.advance(days=1)
    refused = await store.reserve("team", 700, 0, reservation_id="b", ttl_s=60)
    assert not refused.ok
    assert refused.exceeded == ("month_tokens",)
    assert refused.retry_after == MONTH_END
    assert refused.usage.day.reserved_tokens == 0  # the day window was not touched
    assert (await store.reserve("team", 600, 0, reservation_id="c", ttl_s=60)).ok


async def test_a_request_larger_than_the_limit_has_no_retry_time(make_store) -> None:
    store = make_store(sub(day={"usd": 1}))
    refused = await store.reserve("team", 0, 1.5, reservation_id="a", ttl_s=60)
    assert refused.reason == "over_limit" and refused.retry_after is None


async def test_repeating_a_reservation_id_adds_nothing(make_store) -> None:
    store = make_store(sub(day={"tokens": 1000}))
    first = await store.reserve("team", 400, 0.5, reservation_id="a", ttl_s=60)
    again = await store.reserve("team", 400, 0.5, reservation_id="a", ttl_s=60)
    assert first.ok and not first.duplicate
    assert again.ok and again.duplicate and again.expires_at == first.expires_at
    assert (await store.usage("team")).day.reserved_tokens == 400
    await store.settle("a", 300, 0.4)
    assert (await store.reserve("team", 400, 0.5, reservation_id="a", ttl_s=60)).duplicate
    usage = await store.usage("team")
    assert (usage.day.used_tokens, usage.day.reserved_tokens) == (300, 0)


async def test_an_id_used_by_one_subscription_is_refused_by_another(make_store) -> None:
    store = make_store(sub("a"), sub("b", day={"tokens": 10}))
    assert (await store.reserve("a", 5, 0, reservation_id="x", ttl_s=60)).ok
    clash = await store.reserve("b", 5, 0, reservation_id="x", ttl_s=60)
    assert not clash.ok and clash.reason == "reservation_id_in_use"
    # A refused id holds nothing, so a fallback subscription may take it over.
    assert not (await store.reserve("b", 50, 0, reservation_id="y", ttl_s=60)).ok
    assert (await store.reserve("a", 50, 0, reservation_id="y", ttl_s=60)).ok


async def test_a_batch_of_reservations_is_one_round_trip_to_redis(
    make_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(sub("a"), sub("b", day={"tokens": 1_000}))
    assert (await store.reserve("a", 5, 0, reservation_id="held", ttl_s=60)).ok
    assert not (await store.reserve("b", 5_000, 0, reservation_id="refused", ttl_s=60)).ok
    sent: list[int] = []
    real_send = AbstractConnection.send_packed_command

    async def send(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        sent.append(1)
        await real_send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send)
    asks = [store.prepare("b", 10, 0, f"r{i}", 60) for i in range(50)]
    results = await store.reserve_many(asks)
    assert len(sent) == 1  # claims and scripts together, whatever the batch's size
    assert all(r.ok for r in results) and (await store.usage("b")).day.reserved_tokens == 500

    # An id another subscription holds is still refused; one it was refused under may be
    # taken over; a repeated id adds nothing.
    clash, takeover, again = await store.reserve_many(
        [store.prepare("b", 1, 0, rid, 60) for rid in ("held", "refused", "r0")]
    )
    assert not clash.ok and clash.reason == "reservation_id_in_use"
    assert takeover.ok and not takeover.duplicate
    assert again.ok and again.duplicate
    assert (await store.usage("b")).day.reserved_tokens == 501
    assert (await store.usage("a")).day.reserved_tokens == 5
    sent.clear()
    assert (await store.reserve("b", 1, 0, reservation_id="one", ttl_s=60)).ok
    assert len(sent) == 1  # one reservation alone: one round trip too


async def test_a_batch_loads_its_script_when_the_server_does_not_have_it(
    make_store, redis: Redis
) -> None:
    # A server that restarted (or flushed its scripts) answers NOSCRIPT: the batch loads
    # the script and is answered as if it had been there.
    store = make_store(sub(day={"tokens": 100}))
    script = store._claim_reserve.script
    store._claim_reserve = redis.register_script(f"{script}\n-- {uuid.uuid4().hex}")
    results = await store.reserve_many(
        [store.prepare("team", 40, 0, f"r{i}", 60) for i in range(3)]
    )
    assert [r.ok for r in results] == [True, True, False]
    assert (await store.usage("team")).day.reserved_tokens == 80


async def test_settle_replaces_the_reservation_with_actual_usage(make_store) -> None:
    store = make_store(sub(day={"tokens": 10_000, "usd": 10}))
    await store.reserve("team", 5_000, 2.0, reservation_id="a", ttl_s=60)
    result = await store.settle("a", 3_200, 1.25)
    assert result.status == "settled"
    assert (result.reserved_tokens, result.actual_tokens) == (5_000, 3_200)
    day = (await store.usage("team")).day
    assert (day.used_tokens, day.reserved_tokens) == (3_200, 0)
    assert (day.used_micro_usd, day.reserved_micro_usd) == (1_250_000, 0)
    assert day.remaining_tokens == 6_800


async def test_settling_twice_changes_nothing(make_store) -> None:
    store = make_store(sub(day={"tokens": 10_000}))
    await store.reserve("team", 5_000, 0, reservation_id="a", ttl_s=60)
    await store.settle("a", 3_000, 0.3)
    again = await store.settle("a", 3_000, 0.3)
    assert again.status == "already_settled"
    day = (await store.usage("team")).day
    assert (day.used_tokens, day.used_micro_usd, day.reserved_tokens) == (3_000, 300_000, 0)


async def test_a_run_totalled_again_settles_only_what_its_late_events_add(make_store) -> None:
    store = make_store(sub(day={"tokens": 10_000}))
    await store.reserve("team", 5_000, 0, reservation_id="a", ttl_s=60)
    await store.settle("a", 3_000, 0.3)
    grown = await store.settle("a", 3_400, 0.34)
    assert (grown.status, grown.actual_tokens, grown.actual_micro_usd) == (
        "resettled",
        3_400,
        340_000,
    )
    # An older total arriving late, and a repeat of the newest, change nothing.
    assert (await store.settle("a", 3_000, 0.3)).status == "already_settled"
    assert (await store.settle("a", 3_400, 0.34)).status == "already_settled"
    day = (await store.usage("team")).day
    assert (day.used_tokens, day.used_micro_usd, day.reserved_tokens) == (3_400, 340_000, 0)


async def test_settle_after_release_records_the_work_and_returns_nothing_twice(
    make_store,
) -> None:
    store = make_store(sub(day={"tokens": 10_000}))
    await store.reserve("team", 4_000, 0, reservation_id="a", ttl_s=60)
    await store.reserve("team", 1_000, 0, reservation_id="other", ttl_s=60)
    released = await store.release("a")
    assert (released.status, released.tokens) == ("released", 4_000)
    late = await store.settle("a", 2_500, 0.1)
    assert late.status == "settled_after_release"
    day = (await store.usage("team")).day
    assert (day.used_tokens, day.reserved_tokens) == (2_500, 1_000)
    assert (await store.settle("a", 2_500, 0.1)).status == "already_settled"
    assert (await store.release("a")).status == "already_settled"


async def test_releasing_twice_returns_the_reservation_once(make_store) -> None:
    store = make_store(sub(day={"tokens": 10_000}))
    await store.reserve("team", 4_000, 0, reservation_id="a", ttl_s=60)
    await store.reserve("team", 1_000, 0, reservation_id="other", ttl_s=60)
    assert (await store.release("a")).status == "released"
    assert (await store.release("a")).status == "already_released"
    assert (await store.usage("team")).day.reserved_tokens == 1_000
    assert (await store.release("never-made")).status == "unknown"
    assert (await store.settle("never-made", 5, 0)).status == "unknown"


async def test_expired_reservations_are_swept_and_a_late_settle_still_counts(make_store) -> None:
    clock = Clock()
    store = make_store(sub(day={"tokens": 10_000}), clock=clock)
    await store.reserve("team", 4_000, 0, reservation_id="short", ttl_s=30)
    await store.reserve("team", 1_000, 0, reservation_id="long", ttl_s=3_600)
    clock.advance(seconds=29)
    assert await store.sweep() == []
    clock.advance(seconds=1)
    assert await store.sweep() == ["short"]
    assert await store.sweep() == []
    assert (await store.usage("team")).day.reserved_tokens == 1_000
    assert (await store.release("short")).status == "already_expired"
    late = await store.settle("short", 3_000, 0)
    assert late.status == "settled_after_expiry"
    day = (await store.usage("team")).day
    assert (day.used_tokens, day.reserved_tokens) == (3_000, 1_000)


async def test_a_settle_after_midnight_corrects_the_day_it_was_reserved_in(make_store) -> None:
    last_ms = MONTH_END - timedelta(milliseconds=1)  # e.g. 2026-11-30T23:59:59.999Z
    clock = Clock(last_ms)
    store = make_store(sub(day={"tokens": 10_000}, month={"tokens": 100_000}), clock=clock)
    made = await store.reserve("team", 5_000, 0, reservation_id="a", ttl_s=600)
    old_windows = (window_id("day", last_ms), window_id("month", last_ms))
    assert (made.usage.day.window, made.usage.month.window) == old_windows
    clock.advance(milliseconds=1)  # midnight: a new day and a new month
    fresh = await store.usage("team")
    assert fresh.day.window == f"d:{MONTH_END:%Y-%m-%d}"
    assert fresh.month.window == f"m:{MONTH_END:%Y-%m}"
    assert fresh.day.reserved_tokens == fresh.month.reserved_tokens == 0
    settled = await store.settle("a", 4_000, 0)
    assert settled.windows == old_windows
    assert (await store.usage("team")).day.used_tokens == 0
    clock.now = last_ms - timedelta(hours=6)  # look back at the old windows
    old = await store.usage("team")
    assert (old.day.used_tokens, old.day.reserved_tokens) == (4_000, 0)
    assert (old.month.used_tokens, old.month.reserved_tokens) == (4_000, 0)


async def test_window_keys_expire_after_the_window_ends_and_share_one_hash_tag(
    make_store, redis: Redis
) -> None:
    store = make_store(sub(day={"tokens": 10}))
    await store.reserve("team", 1, 0, reservation_id="a", ttl_s=60)
    tag = f"{{{store.namespace}:team}}"
    real_now = datetime.now(UTC)
    for period in ("day", "month"):
        window = window_id(period, NOON)
        expected = (window_end(window) - real_now).total_seconds() + GRACE_S
        assert abs(await redis.ttl(f"{tag}:{window}") - expected) < 5
    keys = [k.decode() async for k in redis.scan_iter(match=f"*{store.namespace}*")]
    assert all(k.startswith(tag) for k in keys if ":rsub:" not in k)


async def test_alerts_fire_once_per_threshold_and_window(make_store) -> None:
    clock = Clock()
    store = make_store(sub(day={"tokens": 1_000}), clock=clock)

    async def reserve(tokens: int) -> list[int]:
        result = await store.reserve("team", tokens, 0, reservation_id=uuid.uuid4().hex, ttl_s=60)
        assert result.ok
        return [a.threshold for a in result.alerts]

    assert await reserve(700) == []
    assert await reserve(100) == [75]
    assert await reserve(50) == []
    assert await reserve(100) == [90]
    assert await reserve(50) == [100]
    assert await reserve(0) == []

    clock.advance(days=1)
    alerts = (await store.reserve("team", 1_000, 0, reservation_id="next-day", ttl_s=60)).alerts
    next_day = window_id("day", clock.now)
    assert [(a.window, a.metric, a.threshold) for a in alerts] == [
        (next_day, "tokens", 75),
        (next_day, "tokens", 90),
        (next_day, "tokens", 100),
    ]
    assert (alerts[-1].value, alerts[-1].limit) == (1_000, 1_000)


async def test_alerts_count_reserved_usage_and_fire_on_settle_overruns(make_store) -> None:
    store = make_store(sub(month={"usd": 10}))
    await store.reserve("team", 0, 5, reservation_id="a", ttl_s=60)
    settled = await store.settle("a", 0, 9.5)  # the run cost more than it reserved
    assert [(a.period, a.metric, a.threshold) for a in settled.alerts] == [
        ("month", "usd", 75),
        ("month", "usd", 90),
    ]


async def test_soft_subscriptions_accept_overruns_and_alert(make_store) -> None:
    store = make_store(sub(enforcement="soft", day={"tokens": 100}))
    result = await store.reserve("team", 150, 0, reservation_id="a", ttl_s=60)
    assert result.ok and result.exceeded == ("day_tokens",)
    assert [a.threshold for a in result.alerts] == [75, 90, 100]
    assert result.usage.day.remaining_tokens == 0


async def test_a_frozen_subscription_refuses_until_unfrozen(make_store) -> None:
    store = make_store(sub(), sub("other"))
    await store.freeze("team")
    refused = await store.reserve("team", 1, 0, reservation_id="a", ttl_s=60)
    assert (refused.ok, refused.reason, refused.usage.frozen) == (False, "frozen", True)
    assert (await store.reserve("other", 1, 0, reservation_id="b", ttl_s=60)).ok
    await store.unfreeze("team")
    assert (await store.reserve("team", 1, 0, reservation_id="a", ttl_s=60)).ok
    assert not (await store.usage("team")).frozen


async def test_rebuild_overwrites_used_counters_from_the_ledger(make_store) -> None:
    store = make_store(sub(day={"tokens": 1_000}))
    await store.reserve("team", 100, 0, reservation_id="a", ttl_s=60)
    await store.settle("a", 100, 0)
    written = await QuotaRestorer(store).rebuild(
        [
            WindowCounters("team", window_id("day", NOON), 900, usd_to_micro(1.5)),
            WindowCounters("team", window_id("month", NOON), 5_000, usd_to_micro(20)),
        ]
    )
    assert written == 2
    usage = await store.usage("team")
    assert (usage.day.used_tokens, usage.day.used_usd) == (900, 1.5)
    assert usage.month.used_tokens == 5_000
    assert not (await store.reserve("team", 101, 0, reservation_id="b", ttl_s=60)).ok


async def test_unknown_subscriptions_and_bad_amounts_are_refused(make_store) -> None:
    store = make_store(sub())
    with pytest.raises(UnknownSubscriptionError):
        await store.reserve("ghost", 1, 0, reservation_id="a", ttl_s=60)
    with pytest.raises(ValueError, match=">= 0"):
        await store.reserve("team", -1, 0, reservation_id="a", ttl_s=60)


# --- property test: random operations against a model of the accounting rules ---------


@dataclass
class Model:
    """What the store must hold after each operation (a single day, limits in both units)."""

    limit_tokens: int
    limit_micro: int
    now_ms: int = 0
    live: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # tokens, micro, exp
    finished: dict[str, str] = field(default_factory=dict)
    #: actual tokens and micro-dollars settled so far, per settled reservation
    actuals: dict[str, list[int]] = field(default_factory=dict)
    used: list[int] = field(default_factory=lambda: [0, 0])
    # Usage the store had to accept without a reservation covering it: overruns and late
    # settles. Only this may take used + reserved past a hard limit.
    unplanned: list[int] = field(default_factory=lambda: [0, 0])

    @property
    def reserved(self) -> list[int]:
        return [sum(r[0] for r in self.live.values()), sum(r[1] for r in self.live.values())]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 400), st.integers(0, 300)),
        st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 500), st.integers(0, 300)),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
        st.tuples(st.just("sweep")),
    ),
    max_size=40,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
async def test_accounting_holds_under_any_sequence_of_operations(redis: Redis, ops) -> None:
    clock = Clock()
    namespace = f"prop-{uuid.uuid4().hex[:12]}"
    store = QuotaStore(
        redis,
        [sub(day={"tokens": 1_000, "usd": 5})],
        namespace=namespace,
        clock=clock,
        window_grace_s=GRACE_S,
    )
    model = Model(limit_tokens=1_000, limit_micro=5_000_000)
    ids: list[str] = []
    try:
        for op in ops:
            await apply(store, model, clock, ids, op)
            usage = await store.usage("team")
            for window in (usage.day, usage.month):
                reserved = [window.reserved_tokens, window.reserved_micro_usd]
                used = [window.used_tokens, window.used_micro_usd]
                assert reserved == model.reserved and min(reserved) >= 0
                assert used == model.used
                assert used[0] + reserved[0] <= model.limit_tokens + model.unplanned[0]
                assert used[1] + reserved[1] <= model.limit_micro + model.unplanned[1]
    finally:
        await drop_namespace(redis, namespace)


async def apply(store: QuotaStore, model: Model, clock: Clock, ids: list[str], op) -> None:
    kind = op[0]
    if kind == "reserve":
        tokens, micro = op[1], op[2] * 10_000
        rid = f"r{len(ids)}"
        ids.append(rid)
        fits = (
            model.used[0] + model.reserved[0] + tokens <= model.limit_tokens
            and model.used[1] + model.reserved[1] + micro <= model.limit_micro
        )
        result = await store.reserve("team", tokens, micro / 1e6, reservation_id=rid, ttl_s=60)
        assert result.ok == fits
        if fits:
            model.live[rid] = (tokens, micro, model.now_ms + 60_000)
    elif kind in ("settle", "release") and ids:
        rid = ids[op[1] % len(ids)]
        if kind == "settle":
            actual = [op[2], op[3] * 10_000]
            result = await store.settle(rid, actual[0], actual[1] / 1e6)
            expected = settle_in_model(model, rid, actual)
            assert result.status == expected
        else:
            released = await store.release(rid)
            if rid in model.live:
                del model.live[rid]
                model.finished[rid] = "released"
                assert released.status == "released"
            else:
                state = model.finished.get(rid)
                assert released.status == (f"already_{state}" if state else "unknown")
    elif kind == "tick":
        clock.advance(seconds=op[1])
        model.now_ms += op[1] * 1000
    elif kind == "sweep":
        swept = await store.sweep()
        due = sorted(rid for rid, r in model.live.items() if r[2] <= model.now_ms)
        assert sorted(swept) == due
        for rid in due:
            del model.live[rid]
            model.finished[rid] = "expired"


def settle_in_model(model: Model, rid: str, actual: list[int]) -> str:
    state = model.finished.get(rid)
    if rid in model.live:
        tokens, micro, _ = model.live.pop(rid)
        for i, reserved in enumerate((tokens, micro)):
            model.unplanned[i] += max(0, actual[i] - reserved)
        status = "settled"
    elif state in ("released", "expired"):
        for i in range(2):
            model.unplanned[i] += actual[i]
        status = "settled_after_release" if state == "released" else "settled_after_expiry"
    elif state == "settled":  # settled again (a run re-totalled): only growth is added
        had = model.actuals[rid]
        grown = [max(0, actual[i] - had[i]) for i in range(2)]
        if grown == [0, 0]:
            return "already_settled"
        for i in range(2):
            model.used[i] += grown[i]
            model.unplanned[i] += grown[i]
            had[i] += grown[i]
        return "resettled"
    else:
        return "unknown"
    for i in range(2):
        model.used[i] += actual[i]
    model.finished[rid] = "settled"
    model.actuals[rid] = list(actual)
    return status


async def test_usage_gauges_show_the_share_of_each_limit_in_use(make_store) -> None:
    name = f"gauged-{uuid.uuid4().hex[:6]}"
    store = make_store(sub(name, day={"tokens": 10_000}, month={"usd": 100}))
    assert (await store.reserve(name, 2_500, 20.0, reservation_id="r1", ttl_s=600)).ok
    await store.freeze(name)
    await handlers.export_usage(store, [name])

    def gauge(metric: str, **labels: str) -> float | None:
        return metrics.registry_for("quota").get_sample_value(
            metric, {"subscription": name, **labels}
        )

    assert gauge("tally_quota_used_ratio", period="day", unit="tokens") == 0.25
    assert gauge("tally_quota_used_ratio", period="month", unit="usd") == 0.2
    # No limit, no ratio: an unlimited window is never "nearly full".
    assert gauge("tally_quota_used_ratio", period="day", unit="usd") is None
    assert gauge("tally_quota_frozen") == 1
