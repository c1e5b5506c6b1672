"""Redis key names of the quota store (see :mod:`services.quota.reservations`)."""

from __future__ import annotations

from collections.abc import Iterable

from services.quota.windows import METRICS


class SubscriptionKeys:
    """Key names of one subscription (one hash tag, one cluster slot)."""

    def __init__(self, namespace: str, subscription: str) -> None:
        self.tag = f"{{{namespace}:{subscription}}}"
        self.expiry = f"{self.tag}:expiry"
        self.frozen = f"{self.tag}:frozen"

    def window(self, window: str) -> str:
        return f"{self.tag}:{window}"

    def reservation(self, reservation_id: str) -> str:
        return f"{self.tag}:r:{reservation_id}"

    def tombstone(self, reservation_id: str) -> str:
        return f"{self.tag}:done:{reservation_id}"

    def script_keys(
        self, reservation_id: str, windows: tuple[str, str], thresholds: Iterable[int] = ()
    ) -> list[str]:
        """KEYS in the order the scripts expect (see ``lua/common.lua``)."""
        keys = [
            self.window(windows[0]),
            self.window(windows[1]),
            self.reservation(reservation_id),
            self.tombstone(reservation_id),
            self.expiry,
            self.frozen,
        ]
        levels = tuple(thresholds)
        keys += [
            f"{self.tag}:alert:{window}:{metric}:{t}"
            for window in windows
            for metric in METRICS
            for t in levels
        ]
        return keys
