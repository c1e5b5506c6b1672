"""Quota windows, money, thresholds and the subscriptions file: pure rules, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.quota.subscriptions import (
    SubscriptionsConfig,
    UnknownSubscriptionError,
    load_subscriptions,
)
from services.quota.windows import (
    WindowUsage,
    crossed_thresholds,
    epoch_ms,
    from_epoch_ms,
    micro_to_usd,
    next_rollover,
    reached_thresholds,
    retry_after,
    usd_to_micro,
    window_end,
    window_id,
    window_start,
)

SHIPPED = Path(__file__).parents[2] / "deploy" / "config" / "subscriptions.yaml"


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_last_millisecond_of_a_day_belongs_to_that_day() -> None:
    last = at(2026, 11, 30, 23, 59, 59, 999000)
    assert window_id("day", last) == "d:2026-11-30"
    assert window_id("month", last) == "m:2026-11"
    first = last + timedelta(milliseconds=1)
    assert window_id("day", first) == "d:2026-12-01"
    assert window_id("month", first) == "m:2026-12"


def test_windows_follow_utc_not_the_callers_zone() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert window_id("day", datetime(2026, 12, 1, 8, 0, tzinfo=tokyo)) == "d:2026-11-30"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        window_id("day", datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [
        ("d:2026-11-22", at(2026, 11, 22), at(2026, 11, 23)),
        ("d:2028-02-28", at(2028, 2, 28), at(2028, 2, 29)),
        ("m:2028-02", at(2028, 2, 1), at(2028, 3, 1)),
        ("m:2026-12", at(2026, 12, 1), at(2027, 1, 1)),
    ],
)
def test_window_bounds(window: str, start: datetime, end: datetime) -> None:
    assert window_start(window) == start
    assert window_end(window) == end


def test_unknown_window_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="window id"):
        window_end("w:2026-47")


def test_next_rollover_is_midnight_or_the_first_of_next_month() -> None:
    now = at(2026, 12, 31, 15, 30)
    assert next_rollover("day", now) == at(2027, 1, 1)
    assert next_rollover("month", at(2026, 11, 22, 9)) == at(2026, 12, 1)


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1)))
def test_every_instant_lies_in_its_windows(instant: datetime) -> None:
    for period in ("day", "month"):
        window = window_id(period, instant)  # type: ignore[arg-type]
        assert window_start(window) <= instant < window_end(window)


def test_epoch_ms_round_trips() -> None:
    instant = at(2026, 11, 22, 23, 59, 59, 999000)
    assert from_epoch_ms(epoch_ms(instant)) == instant


def test_dollars_become_exact_micro_dollars() -> None:
    assert usd_to_micro(0.1) == 100_000
    assert usd_to_micro(0.0000015) == 2  # half to even
    assert usd_to_micro(0.0000025) == 2
    assert sum(usd_to_micro(0.01) for _ in range(1000)) == usd_to_micro(10)
    assert micro_to_usd(1_500_000) == 1.5


def test_thresholds_are_reached_by_integer_percentages() -> None:
    assert reached_thresholds(749, 1000, (75, 90, 100)) == []
    assert reached_thresholds(750, 1000, (75, 90, 100)) == [75]
    assert reached_thresholds(1200, 1000, (100, 75, 90)) == [75, 90, 100]


def test_no_limit_or_no_usage_reaches_nothing() -> None:
    assert reached_thresholds(10**9, None, (75,)) == []
    assert reached_thresholds(0, 0, (75, 100)) == []


def test_crossing_reports_only_new_thresholds() -> None:
    assert crossed_thresholds(800, 950, 1000, (75, 90, 100)) == [90]
    assert crossed_thresholds(0, 1000, 1000, (75, 90, 100)) == [75, 90, 100]
    assert crossed_thresholds(950, 900, 1000, (75, 90, 100)) == []


def test_retry_after_waits_for_every_blocking_window() -> None:
    now = at(2026, 11, 22, 10)
    assert retry_after([("day", 10, 100)], now) == at(2026, 11, 23)
    assert retry_after([("day", 10, 100), ("month", 10, 100)], now) == at(2026, 12, 1)


def test_retry_after_is_none_when_waiting_cannot_help() -> None:
    now = at(2026, 11, 22, 10)
    assert retry_after([("day", 101, 100)], now) is None
    assert retry_after([], now) is None


def test_remaining_never_goes_negative_and_unlimited_is_none() -> None:
    usage = WindowUsage("day", "d:2026-11-22", 900, 200, 5, 0, 1000, None)
    assert usage.remaining_tokens == 0
    assert usage.remaining_micro_usd is None
    assert usage.resets_at == at(2026, 11, 23)


def test_shipped_subscriptions_load_with_defaults() -> None:
    config = load_subscriptions(SHIPPED)
    assert {"claude-max", "openai-team", "api-payg", "local"} <= set(config.names)
    claude = config.get("claude-max")
    assert claude.kind == "prepaid" and claude.hard
    assert claude.limits.day.tokens == 5_000_000
    assert claude.limits.month.tokens == 100_000_000
    assert config.get("api-payg").limits.day.micro_usd == 50_000_000
    local = config.get("local")
    assert local.limits.day.tokens is None and local.limits.month.usd is None
    assert config.get("openai-team").alert_thresholds == (75, 90, 100)


def test_mapping_form_and_soft_subscriptions_always_alert_at_100() -> None:
    config = SubscriptionsConfig.model_validate(
        {
            "subscriptions": {
                "team": {"kind": "payg", "enforcement": "soft", "alert_thresholds": [90, 50]}
            }
        }
    )
    assert config.get("team").alert_thresholds == (50, 90)
    assert config.get("team").effective_thresholds == (50, 90, 100)


def test_invalid_subscriptions_are_refused() -> None:
    with pytest.raises(ValidationError, match="duplicate"):
        SubscriptionsConfig.model_validate(
            {"subscriptions": [{"name": "a", "kind": "payg"}, {"name": "a", "kind": "payg"}]}
        )
    with pytest.raises(ValidationError):
        SubscriptionsConfig.model_validate({"subscriptions": [{"name": "{a}", "kind": "payg"}]})
    with pytest.raises(ValidationError):
        SubscriptionsConfig.model_validate(
            {"subscriptions": [{"name": "a", "kind": "payg", "limits": {"day": {"usd": -1}}}]}
        )
    with pytest.raises(UnknownSubscriptionError):
        load_subscriptions(SHIPPED).get("nope")
