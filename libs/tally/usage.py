"""Token usage from whatever shape an agent reports, counted once and priced.

Providers disagree on what "input tokens" means: OpenAI (chat and responses), Gemini,
LiteLLM, the Vercel AI SDK, OpenTelemetry and OpenInference count cached tokens inside the
input total; Anthropic and AWS Bedrock report them beside it. `normalize_usage` reads each
real payload shape (`tally.usage_shapes`) into one `TokenUsage` whose `input_tokens` is
always the uncached part, so a cached token is never counted twice. A payload it cannot
read — a negative or fractional count, or keys none of which is a known count — raises
`UsageError`: it is refused (and dead-lettered by the tracker), never stored as zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tally.errors import ValidationFailed
from tally.usage_shapes import (
    COUNTS,
    DROPPED,
    SPECS,
    TALLY_META,
    TEXT_KEYS,
    WRAPPERS,
    Shape,
    cache_included,
    detect,
)

#: an alias: a key, and the term to read inside it when it holds a nested mapping
_Alias = tuple[str, "tuple[_Alias, ...] | None"]
_Term = tuple[_Alias, ...]


def _compile(term: str) -> _Term:
    """Parse "a|b/c" once: ``(("a", None), ("b", (("c", None),)))``."""
    aliases = (alias.partition("/") for alias in term.split("|"))
    return tuple((key, _compile(nested) if nested else None) for key, _, nested in aliases)


#: `SPECS` parsed once, so reading a payload splits no strings
_PLANS: dict[str, tuple[tuple[str, tuple[_Term, ...]], ...]] = {
    shape: tuple((field, tuple(map(_compile, terms))) for field, terms in spec.items())
    for shape, spec in SPECS.items()
}
_TEXT_PLAN = tuple(
    (field, _compile(chars), tuple(text.split("|"))) for field, (chars, text) in TEXT_KEYS.items()
)
_CHARS_PER_TOKEN = 4


class UsageError(ValidationFailed, ValueError):
    """A usage payload that cannot be read; `field` is the dotted path of the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class TokenUsage(BaseModel):
    """Tokens one or more model calls used, with cache reads and writes kept apart.

    `input_tokens` excludes cache reads and writes; `output_tokens` includes reasoning.
    Fields a payload did not report are left out of `model_fields_set`, which is how
    `latest` knows to keep an earlier streamed value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)
    estimated: bool = False  #: True when counted from text length, not by the provider
    provider_shape: Shape = "tally"
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def cached_tokens(self) -> int:
        """Input tokens served from the provider's cache."""
        return self.cache_read_tokens

    @property
    def total_input_tokens(self) -> int:
        """All input the provider processed: uncached, cache reads and cache writes."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        """All input plus all output (reasoning is already inside output)."""
        return self.total_input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        """Sum two separate calls; numeric `extra` values add, other values take `other`'s."""
        if not isinstance(other, TokenUsage):
            return NotImplemented
        shape: Shape = self.provider_shape
        if self.provider_shape == "empty" or other.provider_shape == shape:
            shape = other.provider_shape
        elif other.provider_shape != "empty":
            shape = "mixed"
        counts = {name: getattr(self, name) + getattr(other, name) for name in COUNTS}
        return TokenUsage(
            **counts,
            estimated=self.estimated or other.estimated,
            provider_shape=shape,
            extra=_merge_extra(self.extra, other.extra),
        )

    def __radd__(self, other: int) -> TokenUsage:
        """Let the built-in `sum` start from 0."""
        if other == 0:
            return self
        return NotImplemented

    @classmethod
    def latest(cls, earlier: TokenUsage, later: TokenUsage) -> TokenUsage:
        """Combine two cumulative snapshots of one streamed call: later values win, never add.

        A field the later snapshot did not report keeps the earlier value, as when an
        Anthropic `message_delta` carries only `output_tokens`.
        """
        values = {
            name: getattr(later if name in later.model_fields_set else earlier, name)
            for name in (*COUNTS, "estimated")
        }
        shape = earlier.provider_shape if later.provider_shape == "empty" else later.provider_shape
        return cls(**values, provider_shape=shape, extra={**earlier.extra, **later.extra})


def normalize_usage(
    payload: Mapping[str, Any] | None, *, provider: str | None = None
) -> TokenUsage:
    """Read a usage payload (or a whole response holding `usage`/`usageMetadata`).

    Args:
        payload: OpenAI chat or responses usage (and OpenAI-compatible servers: Mistral,
            DeepSeek, ...), LiteLLM's response usage, Anthropic usage, Gemini
            `usageMetadata`, AWS Bedrock Converse usage, the Vercel AI SDK's
            `LanguageModelUsage` (5 and 6), Cohere usage (v2, or v1 `meta`), Ollama's
            response counts, flat OpenTelemetry GenAI or OpenInference attributes, a dumped
            `TokenUsage`, text sizes (`prompt_chars`/`input_text`, ...), or a response or
            stream event wrapping one (see `tally.usage_shapes`).
        provider: A hint for the ambiguous cases: a bare `{input_tokens, output_tokens}`
            ("openai" reads it as the responses API; without a hint it reads as Anthropic,
            and since nothing is cached both give the same counts), and AI SDK 5 usage from
            its Anthropic provider ("anthropic": cache reads beside the input, not in it).

    Returns:
        The usage; ``provider_shape`` "empty" when there was none (``None``, ``{}``,
        ``{"usage": null}``): a call that reported no usage.

    Raises:
        UsageError: a count is negative or not a whole number, cached exceeds the total,
            or the payload has keys but none Tally reads as a token count (the message
            names the keys it had): such a usage is refused, never stored as zero.

    >>> normalize_usage({"prompt_tokens": 100, "completion_tokens": 5,
    ...                  "prompt_tokens_details": {"cached_tokens": 80}}).input_tokens
    20
    """
    usage = _normalize(payload, provider)
    if usage is None:
        keys = sorted(map(str, _unwrap(payload or {}) or {}))
        raise UsageError("usage", f"no token count recognised among its keys: {keys}")
    return usage


def merge_stream(
    chunks: Iterable[Mapping[str, Any] | TokenUsage | None], *, provider: str | None = None
) -> TokenUsage:
    """Usage of one streamed call from its cumulative chunks or events, in arrival order.

    Events that carry no usage (e.g. `content_block_delta`) are skipped.
    """
    result = TokenUsage(provider_shape="empty")
    for chunk in chunks:
        usage = chunk if isinstance(chunk, TokenUsage) else _normalize(chunk, provider)
        if usage is not None and usage.provider_shape != "empty":
            result = TokenUsage.latest(result, usage)
    return result


def _normalize(payload: Mapping[str, Any] | None, provider: str | None) -> TokenUsage | None:
    """`normalize_usage`, returning None for a mapping with no recognised count."""
    if payload is None:
        return TokenUsage(provider_shape="empty")
    if not _is_mapping(payload):
        raise UsageError("usage", f"expected a mapping, got {type(payload).__name__}")
    data = _unwrap(payload)
    if not data:
        return TokenUsage(provider_shape="empty")
    shape = detect(data, provider)
    if shape == "empty":
        return None
    reader = _Reader(data)
    if shape == "text":
        counts = _read_text(reader)
    else:
        counts = _read_spec(reader, shape, cache_included(shape, data, provider))
    values: dict[str, Any] = {name: value for name, value in counts.items() if value is not None}
    values |= {"estimated": shape == "text", "provider_shape": shape}
    if shape == "tally":  # a dumped TokenUsage: its own metadata round-trips
        values |= {key: reader.raw(key) for key in TALLY_META if reader.has(key)}
    extra = values.pop("extra", None) or {}
    if not _is_mapping(extra):
        raise UsageError("extra", f"expected a mapping, got {extra!r}")
    leftover = reader.leftover()
    if shape in DROPPED:
        leftover = {k: v for k, v in leftover.items() if k not in DROPPED[shape]}
    try:
        return TokenUsage.model_validate({**values, "extra": {**extra, **leftover}})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UsageError(".".join(map(str, error["loc"])), error["msg"]) from exc


def cost_usd(
    usage: TokenUsage,
    *,
    input_per_mtok: float,
    output_per_mtok: float,
    cached_input_per_mtok: float,
    cache_write_per_mtok: float | None = None,
) -> float:
    """Dollar cost of `usage` at per-million-token prices.

    Cache reads are priced at `cached_input_per_mtok`, cache writes at
    `cache_write_per_mtok` (the input price when a model has no separate one).
    """
    write = input_per_mtok if cache_write_per_mtok is None else cache_write_per_mtok
    dollars = (
        usage.input_tokens * input_per_mtok
        + usage.output_tokens * output_per_mtok
        + usage.cache_read_tokens * cached_input_per_mtok
        + usage.cache_write_tokens * write
    )
    return dollars / 1_000_000


class _Reader:
    """Reads counts from one mapping and remembers which keys were understood."""

    __slots__ = ("_children", "_data", "_path", "_used")

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self._data, self._path = data, path
        self._used: set[str] = set()
        self._children: dict[str, _Reader] = {}

    def count(self, term: _Term) -> int | None:
        """The first reported value among `term`'s aliases; a nested alias reads its child.

        Every alias present is read (and checked), so a bad value is reported even when an
        earlier alias already gave the count.
        """
        found = None
        data = self._data
        for key, nested in term:
            if key not in data:
                continue
            self._used.add(key)
            if nested is None:
                value = _as_count(data[key], self._path + key)
            else:
                value = self._child(key).count(nested)
            if found is None:
                found = value
        return found

    def _child(self, key: str) -> _Reader:
        child = self._children.get(key)
        if child is None:
            value = self._data[key] or {}  # OpenAI sends `"prompt_tokens_details": null`
            if not _is_mapping(value):
                raise UsageError(self._path + key, f"expected a mapping, got {value!r}")
            child = self._children[key] = _Reader(value, f"{self._path}{key}.")
        return child

    def raw(self, key: str) -> Any:
        self._used.add(key)
        return self._data[key]

    def has(self, key: str) -> bool:
        return key in self._data

    def leftover(self) -> dict[str, Any]:
        used = self._used
        rest = {key: value for key, value in self._data.items() if key not in used}
        for key, child in self._children.items():
            if child_rest := child.leftover():
                rest[key] = child_rest
        return rest


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # A JSON payload's mappings are dicts: checking that first skips the ABC machinery.
    return type(value) is dict or isinstance(value, Mapping)


def _as_count(value: Any, field: str) -> int | None:
    if type(value) is int:  # the common case, checked first
        if value < 0:
            raise UsageError(field, f"negative token count {value}")
        return value
    if value is None:
        return None
    count: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, float) and value.is_integer():
        count = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        count = int(value)  # OTel exporters sometimes stringify attribute values
    if count is None:
        raise UsageError(field, f"expected a whole token count, got {value!r}")
    if count < 0:
        raise UsageError(field, f"negative token count {count}")
    return count


def _read_spec(r: _Reader, shape: str, included: bool) -> dict[str, int | None]:
    """Counts for one shape; an input total that includes the cache becomes uncached."""
    counts: dict[str, int | None] = {}
    for field, terms in _PLANS.get(shape, ()):
        total = None  # None when no term was reported; reported terms add up
        for term in terms:
            value = r.count(term)
            if value is not None:
                total = value if total is None else total + value
        counts[field] = total
    total_in = counts.get("input_tokens")
    if included and total_in is not None:
        uncached = total_in - (counts.get("cache_read_tokens") or 0)
        uncached -= counts.get("cache_write_tokens") or 0
        if uncached < 0:
            field = SPECS[shape]["input_tokens"][0].split("|")[0]
            raise UsageError(field, f"cached tokens exceed the input total {total_in}")
        counts["input_tokens"] = uncached
    counts.pop("derived", None)
    return counts


def _read_text(r: _Reader) -> dict[str, int | None]:
    """Tokens estimated from text sizes; a stated char count wins over the text itself."""
    counts: dict[str, int | None] = {}
    for field, chars_term, text_keys in _TEXT_PLAN:
        chars = r.count(chars_term)
        for key in (k for k in text_keys if r.has(k)):
            text = r.raw(key)
            if not isinstance(text, str):
                raise UsageError(key, f"expected text, got {type(text).__name__}")
            chars = len(text) if chars is None else chars
        counts[field] = None if chars is None else math.ceil(chars / _CHARS_PER_TOKEN)
    return counts


def _unwrap(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The usage inside a response or stream event, or the payload itself."""
    for key in WRAPPERS:
        if key in payload:
            inner = payload[key]
            if inner is not None and not _is_mapping(inner):
                raise UsageError(key, f"expected a mapping, got {type(inner).__name__}")
            return inner
    for key in ("response", "message"):  # OpenAI response.completed, Anthropic message_start
        inner = payload.get(key)
        if _is_mapping(inner) and any(k in inner for k in WRAPPERS):
            return _unwrap(inner)
    meta = payload.get("meta")  # Cohere v1 keeps its counts in the response's `meta`
    if _is_mapping(meta) and ("billed_units" in meta or "tokens" in meta):
        return meta
    return payload


def _merge_extra(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = _merge_extra(old, value)
        elif _is_number(old) and _is_number(value):
            merged[key] = old + value
        else:
            merged[key] = value
    return merged


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
