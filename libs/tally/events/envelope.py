"""The envelope every Tally event carries, and the base class of all event schemas."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from tally.errors import ValidationFailed

#: Payloads above this size are refused before parsing (1 MiB, NATS's default max_payload).
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Envelope schema versions this build reads; anything else is dead-lettered with the reason.
#: Within a version, readers are tolerant: fields they do not know are ignored (a newer
#: publisher may add optional fields); a change that is not additive bumps the version.
SCHEMA_VERSIONS = (1, 1)


_ISO_ONLY = "timestamps must be ISO-8601 strings, e.g. 2026-01-31T12:00:00Z"


def _iso_only(value: Any) -> Any:
    """Timestamps travel as ISO-8601 strings: a bare number is ambiguous (s? ms?)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(_ISO_ONLY)
    return value


class _IsoTimestamp:
    """How a `Timestamp` is validated. From JSON: a string, read as a datetime, all inside
    pydantic-core (a Python check per timestamp cost the tracker ~6% of its time); any
    other JSON value is refused with `_ISO_ONLY`. From Python: a datetime or a string, a
    number refused by `_iso_only`."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        parsed = handler(source)
        text = core_schema.custom_error_schema(
            core_schema.str_schema(strict=True, strip_whitespace=False),
            custom_error_type="iso_timestamp",
            custom_error_message=_ISO_ONLY,
        )
        return core_schema.json_or_python_schema(
            json_schema=core_schema.chain_schema([text, parsed]),
            python_schema=core_schema.no_info_before_validator_function(_iso_only, parsed),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(core_schema.datetime_schema())  # the contract: a date-time string


#: A point in time, given on the bus as an ISO-8601 string.
Timestamp = Annotated[datetime, _IsoTimestamp]


E = TypeVar("E", bound="Event")


def new_id() -> str:
    """A new random identifier (UUID4 hex)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Model(BaseModel):
    """Base of every Tally schema: unknown fields are refused, so typos fail loudly.

    That is the writer's side (building a model in Python, reading our own config). On the
    bus, :meth:`Event.parse` reads tolerantly: unknown fields are ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Event(Model):
    """An event: the envelope plus the subject it is published on.

    ``event_id`` is the JetStream ``Nats-Msg-Id`` (so the server drops a republished
    duplicate) and the idempotency key in Postgres (so a redelivery changes nothing).
    """

    subject: ClassVar[str]

    event_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    occurred_at: Timestamp = Field(default_factory=utcnow)
    schema_version: int = Field(1, ge=SCHEMA_VERSIONS[0], le=SCHEMA_VERSIONS[1])
    source: str = Field("unknown", max_length=64)
    correlation_id: str | None = Field(None, max_length=128)
    workspace: str = Field("default", min_length=1, max_length=64)

    @field_validator("schema_version", mode="before")
    @classmethod
    def _known_version(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = SCHEMA_VERSIONS
            if value > high:
                raise ValueError(
                    f"schema_version {value} is newer than this Tally reads ({low}..{high}); "
                    "upgrade Tally or publish version 1"
                )
        return value

    @classmethod
    def parse(cls, raw: bytes | str) -> Self:
        """Validate a JSON payload, raising :class:`ValidationFailed` that names the fields.

        Tolerant reader: fields this build does not know (at any depth) are ignored, so a
        newer publisher's additive change never dead-letters a message. A higher
        ``schema_version`` is refused with the reason.

        Example:
            >>> TaskCreated.parse(b'{"task_id": "t1", "title": ""}')  # doctest: +SKIP
            ValidationFailed: title: String should have at least 1 character
        """
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise ValidationFailed(f"payload is {len(raw)} bytes, over {MAX_PAYLOAD_BYTES}")
        try:
            event = cls.model_validate_json(raw, extra="ignore")
        except ValidationError as exc:
            raise ValidationFailed(describe(exc, cls.__name__)) from exc
        nul = b"\\u0000" in raw if isinstance(raw, bytes) else "\\u0000" in raw
        if nul:  # the JSON escape of NUL, or a literal backslash before "u0000": look closer
            _refuse_nul(json.loads(raw), cls.__name__)
        return event

    def to_json(self) -> bytes:
        """The event as compact JSON bytes, as published on the bus."""
        return self.model_dump_json(exclude_none=True).encode()

    def child(self, cls: type[E], **fields: Any) -> E:
        """A new event caused by this one: same workspace, correlated to this event."""
        fields.setdefault("workspace", self.workspace)
        fields.setdefault("correlation_id", self.correlation_id or self.event_id)
        return cls(**fields)


def _refuse_nul(value: Any, where: str) -> None:
    """Raise naming the first string (or key) holding a NUL, which Postgres cannot store."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationFailed(f"{where}: text contains a NUL character (\\u0000)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key, f"{where}.<key>")
            _refuse_nul(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_nul(item, f"{where}.{i}")


def describe(exc: ValidationError, schema: str) -> str:
    """One line per failing field, e.g. ``TaskCreated.priority: Input should be 'P0'…``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "<payload>"
        parts.append(f"{schema}.{loc}: {err['msg']}")
    return "; ".join(parts)
