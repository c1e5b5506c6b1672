"""Recomputing Redis counters from the Postgres ledger, after Redis lost its data.

Pure functions over ledger rows. A reservation's usage belongs to the windows it was
reserved in (as in Redis), so a run settled after midnight still counts in the day it was
reserved. Per reservation id:

* a ``settle`` row adds its actual tokens and dollars to ``used``;
* a ``reserve`` row with no ``settle``, ``release`` or ``expire`` row is still live: its
  amounts are ``reserved`` and the reservation itself is restored, with its expiry;
* a ``release`` or ``expire`` without a settle leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

#: Ledger operations that end a reservation.
TERMINAL_OPS = frozenset({"settle", "release", "expire"})


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One ledger row, as the rebuild needs it (money in micro-dollars)."""

    op: str
    reservation_id: str
    subscription: str
    tokens: int
    micro_usd: int
    day: str
    month: str
    at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """Used and reserved totals of one window of one subscription."""

    subscription: str
    window: str
    used_tokens: int = 0
    used_micro_usd: int = 0
    reserved_tokens: int = 0
    reserved_micro_usd: int = 0


@dataclass(frozen=True, slots=True)
class LiveReservation:
    """A reservation the ledger says is neither settled, released nor expired."""

    reservation_id: str
    subscription: str
    tokens: int
    micro_usd: int
    windows: tuple[str, str]
    created_at: datetime
    expires_at: datetime


def _largest(held: LedgerRow | None, row: LedgerRow) -> LedgerRow:
    """Of two settle rows of one reservation, the one with the larger actuals."""
    if held is None:
        return row
    if (row.tokens, row.micro_usd) > (held.tokens, held.micro_usd):
        return row
    return held


def ledger_state(
    rows: Iterable[LedgerRow], default_ttl_s: int = 4 * 3600
) -> tuple[list[WindowTotals], list[LiveReservation]]:
    """Window totals and live reservations implied by the ledger.

    Args:
        rows: ledger rows in any order.
        default_ttl_s: expiry of a live reservation whose reserve row has none (written
            before the ledger recorded expiries), counted from when it was reserved.

    Returns:
        Totals of every window that any row touches (sorted), and the live reservations.
    """
    by_id: dict[str, dict[str, LedgerRow]] = {}
    for row in rows:
        ops = by_id.setdefault(row.reservation_id, {})
        if row.op == "resettle":  # cumulative actuals of a run totalled again: the largest
            row = _largest(ops.get("settle"), row)
            ops["settle"] = row
        elif row.op == "settle":
            ops["settle"] = _largest(ops.get("settle"), row)
        else:
            ops[row.op] = row
    totals: dict[tuple[str, str], list[int]] = {}

    def add(sub: str, window: str, index: int, tokens: int, micro: int) -> None:
        counters = totals.setdefault((sub, window), [0, 0, 0, 0])
        counters[index] += tokens
        counters[index + 1] += micro

    live: list[LiveReservation] = []
    for rid, ops in sorted(by_id.items()):
        reserve = ops.get("reserve")
        anchor = reserve or next(iter(ops.values()))
        windows = (f"d:{anchor.day}", f"m:{anchor.month}")
        settle = ops.get("settle")
        if settle is not None:
            for w in windows:
                add(settle.subscription, w, 0, settle.tokens, settle.micro_usd)
        elif reserve is not None and not TERMINAL_OPS & ops.keys():
            for w in windows:
                add(reserve.subscription, w, 2, reserve.tokens, reserve.micro_usd)
            live.append(
                LiveReservation(
                    rid,
                    reserve.subscription,
                    reserve.tokens,
                    reserve.micro_usd,
                    windows,
                    reserve.at,
                    reserve.expires_at or reserve.at + timedelta(seconds=default_ttl_s),
                )
            )
        else:
            for w in windows:  # the window existed: rebuild it, even if to zero
                add(anchor.subscription, w, 0, 0, 0)
    windows_out = [WindowTotals(sub, w, *c) for (sub, w), c in sorted(totals.items())]
    return windows_out, live
