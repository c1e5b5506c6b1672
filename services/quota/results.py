"""What the quota store's operations answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from services.quota.windows import Alert, Usage, micro_to_usd

SettleStatus = Literal[
    "settled",  # a live reservation became usage
    "settled_after_release",  # released earlier: actuals recorded, nothing returned twice
    "settled_after_expiry",  # swept earlier: actuals recorded, nothing returned twice
    "already_settled",  # a repeated settle: nothing changed
    # Never reserved, refused, or finished longer than tombstone_ttl_s ago: nothing changed.
    "unknown",
]
ReleaseStatus = Literal[
    "released",
    "expired",  # released by the sweeper because its expiry passed
    "already_released",
    "already_expired",
    "already_settled",
    "unknown",
]


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """The answer to a reservation request.

    ``reason`` is ``None`` when accepted, else ``"frozen"``, ``"over_limit"`` (see
    ``exceeded``) or ``"reservation_id_in_use"`` (the id belongs to another subscription).
    ``exceeded`` names the limits (``"day_tokens"``, ``"month_usd"``...) the reservation
    would pass; on a soft subscription they are passed and the reservation is accepted.
    ``retry_after`` is when the blocking windows roll over, ``None`` if the request can
    never fit or waiting would not help. ``duplicate`` marks a repeated reservation id:
    nothing was added and ``ok`` reflects the original acceptance.
    """

    ok: bool
    reservation_id: str
    reason: str | None
    retry_after: datetime | None
    alerts: list[Alert]
    usage: Usage
    expires_at: datetime | None = None
    exceeded: tuple[str, ...] = ()
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class SettleResult:
    """What a settle did; amounts are the reservation's and the reported actuals."""

    reservation_id: str
    status: SettleStatus
    subscription: str | None = None
    windows: tuple[str, str] | None = None
    reserved_tokens: int = 0
    reserved_micro_usd: int = 0
    actual_tokens: int = 0
    actual_micro_usd: int = 0
    alerts: list[Alert] = field(default_factory=list)
    #: the part of ``actual_micro_usd`` charged at the fallback price for unpriced tokens
    fallback_micro_usd: int = 0

    @property
    def actual_cost_usd(self) -> float:
        return micro_to_usd(self.actual_micro_usd)


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What a release did; ``tokens``/``micro_usd`` are the reservation's amounts."""

    reservation_id: str
    status: ReleaseStatus
    subscription: str | None = None
    tokens: int = 0
    micro_usd: int = 0
