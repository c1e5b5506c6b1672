"""Rebuilding quota counters from ledger rows, and the bars of ``tally quota``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.quota.rebuild import LedgerRow, LiveReservation, WindowTotals, ledger_state
from tally.cli.quota import bar, usage_lines

AT = datetime(2026, 11, 22, 23, 50, tzinfo=UTC)


def row(op: str, rid: str, tokens: int, micro: int = 0, **kw: object) -> LedgerRow:
    fields: dict[str, object] = {"day": "2026-11-22", "month": "2026-11", "at": AT}
    fields.update(kw)
    return LedgerRow(op, rid, "team", tokens, micro, **fields)  # type: ignore[arg-type]


def test_settled_released_expired_and_live_reservations_add_up() -> None:
    expiry = AT + timedelta(hours=1)
    rows = [
        row("reserve", "settled", 500, 5_000),
        # Settled after midnight: still counts in the day it was reserved in.
        row("settle", "settled", 300, 4_200, day="2026-11-23", at=AT + timedelta(minutes=20)),
        row("reserve", "released", 400, 1_000),
        row("release", "released", 400, 1_000),
        row("reserve", "expired", 100, 10),
        row("expire", "expired", 100, 10),
        row("reserve", "live", 700, 7_000, expires_at=expiry),
    ]
    windows, live = ledger_state(reversed(rows))
    assert windows == [
        WindowTotals("team", "d:2026-11-22", 300, 4_200, 700, 7_000),
        WindowTotals("team", "m:2026-11", 300, 4_200, 700, 7_000),
    ]
    assert live == [
        LiveReservation("live", "team", 700, 7_000, ("d:2026-11-22", "m:2026-11"), AT, expiry)
    ]


def test_a_settle_after_release_counts_the_actuals_once() -> None:
    rows = [
        row("reserve", "r", 500),
        row("release", "r", 500),
        row("settle", "r", 450),
    ]
    windows, live = ledger_state(rows)
    assert [(w.used_tokens, w.reserved_tokens) for w in windows] == [(450, 0), (450, 0)]
    assert live == []


def test_a_live_reservation_without_a_recorded_expiry_gets_the_default_ttl() -> None:
    _, live = ledger_state([row("reserve", "old", 10)], default_ttl_s=600)
    assert live[0].expires_at == AT + timedelta(seconds=600)


def test_bars_show_used_reserved_and_free_in_proportion() -> None:
    assert bar(50, 25, 100, width=8) == "████▒▒░░"
    assert bar(0, 0, 100, width=4) == "░░░░"
    assert bar(150, 10, 100, width=4) == "████"  # over a soft limit: full, never longer
    assert bar(5, 0, None) == ""


def test_usage_lines_show_remaining_allowance_per_limit() -> None:
    window = {
        "used_tokens": 600,
        "reserved_tokens": 150,
        "used_usd": 0.0,
        "reserved_usd": 0.0,
        "limit_tokens": 1000,
        "limit_usd": None,
        "resets_at": "2026-11-23T00:00:00+00:00",
    }
    unlimited = {**window, "limit_tokens": None}
    lines = usage_lines({"subscription": "team", "frozen": True, "day": window, "month": unlimited})
    assert "frozen" in lines[0]
    assert "75.0%" in lines[1] and "remaining 250 of 1,000" in lines[1]
    assert "unlimited" in lines[2]
