"""The usage payload shapes Tally reads: where each keeps its counts, and how to tell them apart.

Each shape maps Tally's counts to the keys a provider or SDK uses. ``"a|b"`` are aliases
(the first reported wins; every one present is checked), ``"a/b"`` is a nested key, and
several terms for one count add up. ``derived`` keys are totals Tally recomputes, so they
are read (and checked) but not kept as metadata. Shapes in `CACHE_INCLUDED` count cache
reads and writes inside their input total; the others report them beside it.

Sources of each shape are cited in ``tests/unit/test_usage_shapes.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

#: the payload convention a usage was read from; "mixed" is a sum across conventions
Shape = Literal[
    "openai_chat", "openai_responses", "anthropic", "gemini", "otel", "openinference",
    "vercel", "litellm", "bedrock", "cohere", "ollama", "tally", "text", "empty", "mixed",
]  # fmt: skip
CACHE = ("cache_read_tokens", "cache_write_tokens")
COUNTS = ("input_tokens", "output_tokens", *CACHE, "reasoning_tokens")
_O = "gen_ai.usage."
_OI = "llm.token_count."
_THOUGHTS = "thoughtsTokenCount|thoughts_token_count"
_TOOL_PROMPT = "toolUsePromptTokenCount|tool_use_prompt_token_count"
SPECS: dict[str, dict[str, tuple[str, ...]]] = {
    "openai_chat": {  # also Mistral, DeepSeek, xAI and other OpenAI-compatible servers
        "input_tokens": ("prompt_tokens",),
        "output_tokens": ("completion_tokens",),
        "cache_read_tokens": ("prompt_tokens_details/cached_tokens",),
        "reasoning_tokens": ("completion_tokens_details/reasoning_tokens",),
        "derived": ("total_tokens",),
    },
    "litellm": {  # OpenAI's chat shape plus Anthropic's cache counts, inside prompt_tokens
        "input_tokens": ("prompt_tokens",),
        "output_tokens": ("completion_tokens",),
        "cache_read_tokens": ("cache_read_input_tokens|prompt_tokens_details/cached_tokens",),
        "cache_write_tokens": (
            "cache_creation_input_tokens|prompt_tokens_details/cache_creation_tokens",
        ),
        "reasoning_tokens": ("completion_tokens_details/reasoning_tokens",),
        "derived": ("total_tokens",),
    },
    "openai_responses": {
        "input_tokens": ("input_tokens",),
        "output_tokens": ("output_tokens",),
        "cache_read_tokens": ("input_tokens_details/cached_tokens",),
        "reasoning_tokens": ("output_tokens_details/reasoning_tokens",),
        "derived": ("total_tokens",),
    },
    "anthropic": {
        "input_tokens": ("input_tokens",),
        "output_tokens": ("output_tokens",),
        "cache_read_tokens": ("cache_read_input_tokens",),
        "cache_write_tokens": ("cache_creation_input_tokens",),
    },
    "gemini": {  # thoughts and tool-use prompts are reported beside the counts they extend
        "input_tokens": ("promptTokenCount|prompt_token_count", _TOOL_PROMPT),
        "output_tokens": ("candidatesTokenCount|candidates_token_count", _THOUGHTS),
        "cache_read_tokens": ("cachedContentTokenCount|cached_content_token_count",),
        "reasoning_tokens": (_THOUGHTS,),
        "derived": ("totalTokenCount|total_token_count",),
    },
    "otel": {
        "input_tokens": (f"{_O}input_tokens|{_O}prompt_tokens",),
        "output_tokens": (f"{_O}output_tokens|{_O}completion_tokens",),
        "cache_read_tokens": (f"{_O}cache_read.input_tokens|{_O}cache_read_input_tokens",),
        "cache_write_tokens": (f"{_O}cache_creation.input_tokens|{_O}cache_creation_input_tokens",),
        "reasoning_tokens": (f"{_O}reasoning.output_tokens|{_O}output_tokens.reasoning",),
        "derived": (f"{_O}total_tokens",),
    },
    "openinference": {
        "input_tokens": (f"{_OI}prompt",),
        "output_tokens": (f"{_OI}completion",),
        "cache_read_tokens": (f"{_OI}prompt_details.cache_read",),
        "cache_write_tokens": (f"{_OI}prompt_details.cache_write",),
        "reasoning_tokens": (f"{_OI}completion_details.reasoning",),
        "derived": (f"{_OI}total",),
    },
    "vercel": {  # AI SDK 6 details, with AI SDK 5's flat (deprecated) names as aliases
        "input_tokens": ("inputTokens",),
        "output_tokens": ("outputTokens",),
        "cache_read_tokens": ("inputTokenDetails/cacheReadTokens|cachedInputTokens",),
        "cache_write_tokens": ("inputTokenDetails/cacheWriteTokens",),
        "reasoning_tokens": ("outputTokenDetails/reasoningTokens|reasoningTokens",),
        "derived": (
            "totalTokens",
            "inputTokenDetails/noCacheTokens",
            "outputTokenDetails/textTokens",
        ),
    },
    "bedrock": {  # Converse API: cache reads and writes beside inputTokens
        "input_tokens": ("inputTokens",),
        "output_tokens": ("outputTokens",),
        "cache_read_tokens": ("cacheReadInputTokens",),
        "cache_write_tokens": ("cacheWriteInputTokens",),
        "derived": ("totalTokens",),
    },
    "cohere": {  # billed units are what is charged; processed tokens when not given
        "input_tokens": ("billed_units/input_tokens|tokens/input_tokens",),
        "output_tokens": ("billed_units/output_tokens|tokens/output_tokens",),
    },
    "ollama": {
        "input_tokens": ("prompt_eval_count",),
        "output_tokens": ("eval_count",),
    },
}
SPECS["tally"] = {name: (name,) for name in COUNTS}
#: shapes whose input count already includes cache reads and writes
CACHE_INCLUDED = {"openai_chat", "litellm", "openai_responses", "gemini", "otel", "openinference"}
CACHE_INCLUDED |= {"vercel"}
#: keys of a whole response that are not usage: not kept as metadata
DROPPED: dict[str, frozenset[str]] = {
    "ollama": frozenset(
        {"model", "created_at", "message", "response", "context", "done", "done_reason"}
    ),
}
TALLY_META = ("estimated", "provider_shape", "extra")
TEXT_KEYS = {
    "input_tokens": ("prompt_chars|input_chars", "input_text|prompt_text"),
    "output_tokens": ("completion_chars|output_chars", "output_text|completion_text"),
}
_TEXT = {k for terms in TEXT_KEYS.values() for t in terms for k in t.split("|")}
_TALLY_ONLY = {*CACHE, "reasoning_tokens", *TALLY_META}
_ANTHROPIC = {"cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"}
_RESPONSES = {"input_tokens_details", "output_tokens_details"}
_GEMINI = {k for terms in SPECS["gemini"].values() for t in terms for k in t.split("|")}
_BEDROCK = {"cacheReadInputTokens", "cacheWriteInputTokens", "cacheDetails"}
_VERCEL = {"inputTokenDetails", "outputTokenDetails", "cachedInputTokens", "reasoningTokens"}
_OLLAMA = {"prompt_eval_count", "eval_count"}
#: keys that wrap the usage inside a response or stream event
WRAPPERS = ("usage", "usageMetadata", "usage_metadata")
#: provider hints that settle a bare {input_tokens, output_tokens} payload
_HINTS: dict[str, Shape] = {"openai": "openai_responses", "anthropic": "anthropic"}


def detect(data: Mapping[str, Any], provider: str | None) -> Shape:
    """The shape of a usage mapping, or ``"empty"`` when no key is a known count."""
    keys = data.keys()
    hint = (provider or "").lower()
    # Checked in order of precedence; the first that matches names the shape.
    if not keys.isdisjoint(_TALLY_ONLY):
        return "tally"
    if any(k.startswith(_O) for k in keys):
        return "otel"
    if any(k.startswith(_OI) for k in keys):
        return "openinference"
    if not keys.isdisjoint(_GEMINI):
        return "gemini"
    if "prompt_tokens" in keys or "completion_tokens" in keys:
        return "litellm" if not keys.isdisjoint(_ANTHROPIC) else "openai_chat"
    if not keys.isdisjoint(_ANTHROPIC):
        return "anthropic"
    if not keys.isdisjoint(_RESPONSES):
        return "openai_responses"
    if "input_tokens" in keys or "output_tokens" in keys:
        return _HINTS.get(hint) or "anthropic"
    if not keys.isdisjoint(_BEDROCK) or (hint == "bedrock" and "inputTokens" in keys):
        return "bedrock"
    if not keys.isdisjoint(_VERCEL) or "inputTokens" in keys or "outputTokens" in keys:
        return "vercel"
    if "billed_units" in keys or _is_counts(data.get("tokens")):
        return "cohere"
    if not keys.isdisjoint(_OLLAMA):
        return "ollama"
    if not keys.isdisjoint(_TEXT):
        return "text"
    return "empty"


def cache_included(shape: Shape, data: Mapping[str, Any], provider: str | None) -> bool:
    """Whether ``data``'s input total already counts its cache reads and writes.

    AI SDK 5 passed each provider's own convention through: its Anthropic provider's
    ``inputTokens`` leaves the cache out (vercel/ai#8349), the others include it. AI SDK 6
    (``inputTokenDetails``) always includes it.
    """
    if shape == "vercel" and "inputTokenDetails" not in data:
        return (provider or "").lower() != "anthropic"
    return shape in CACHE_INCLUDED


def _is_counts(value: Any) -> bool:
    return isinstance(value, Mapping) and ("input_tokens" in value or "output_tokens" in value)
