"""The dead letter: a message a service could not process, kept whole with the reason."""

from __future__ import annotations

from tally.events.envelope import Model, Timestamp


class DeadLetter(Model):
    """Published on ``dlq.<service>``. ``payload`` is the original body, decoded as UTF-8
    with invalid bytes escaped; ``headers`` are the original headers.

    A body too large to travel inside a letter is cut to its first
    ``DEAD_LETTER_BODY_BYTES`` and stored whole in the dead-letter object store under
    ``payload_ref`` (its sha256); ``payload_size`` and ``payload_sha256`` always describe
    the original, so nothing is lost and a replay can fetch it.
    """

    service: str
    subject: str
    error: str
    error_type: str
    failed_at: Timestamp
    payload: str
    headers: dict[str, str]
    deliveries: int = 1
    payload_size: int = 0
    payload_sha256: str = ""
    #: object-store key of the whole body when ``payload`` is only its beginning
    payload_ref: str | None = None
