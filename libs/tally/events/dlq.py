"""The dead letter: a message a service could not process, kept whole with the reason."""

from __future__ import annotations

from datetime import datetime

from tally.events.envelope import Model


class DeadLetter(Model):
    """Published on ``dlq.<service>``. ``payload`` is the original body, decoded as UTF-8
    with invalid bytes escaped; ``headers`` are the original headers."""

    service: str
    subject: str
    error: str
    error_type: str
    failed_at: datetime
    payload: str
    headers: dict[str, str]
    deliveries: int = 1
