"""Every usage shape Tally reads, each on a payload as its provider or SDK sends it.

Each payload below is built to the provider's documented response or the SDK's types; the
comment above it names the source. Whatever the shape, a cached token is counted once:
``input_tokens`` is always the uncached part, and the parts add up to the provider's total.
"""

from __future__ import annotations

from typing import Any

import pytest

from tally.usage import TokenUsage, UsageError, merge_stream, normalize_usage

# Vercel AI SDK 6, `LanguageModelUsage` (ai@6, packages/ai/src/types/usage.ts): inputTokens
# is the total, split in inputTokenDetails; the deprecated flat names are still sent. The
# numbers are what @ai-sdk/openai's convertOpenAIChatUsage makes of an OpenAI chat usage
# (total = prompt_tokens, noCache = prompt - cached, cacheRead = cached).
VERCEL_V6_USAGE = {
    "inputTokens": 2006,
    "inputTokenDetails": {"noCacheTokens": 86, "cacheReadTokens": 1920, "cacheWriteTokens": None},
    "outputTokens": 300,
    "outputTokenDetails": {"textTokens": 236, "reasoningTokens": 64},
    "totalTokens": 2306,
    "reasoningTokens": 64,
    "cachedInputTokens": 1920,
}
# Vercel AI SDK 5, `LanguageModelUsage` {inputTokens, outputTokens, totalTokens,
# reasoningTokens?, cachedInputTokens?}, from its Anthropic provider: printed in
# vercel/ai issue #8349 — inputTokens leaves the cache out (totalTokens = input + output).
VERCEL_V5_ANTHROPIC_USAGE = {
    "inputTokens": 4532,
    "outputTokens": 222,
    "totalTokens": 4754,
    "cachedInputTokens": 5439,
}
# LiteLLM's `Usage` for an Anthropic call (litellm/llms/anthropic/chat/transformation.py,
# calculate_usage): prompt_tokens = input + cache creation + cache read, with the cache
# counts beside it and in prompt_tokens_details.
LITELLM_ANTHROPIC_USAGE = {
    "prompt_tokens": 21050,
    "completion_tokens": 503,
    "total_tokens": 21553,
    "prompt_tokens_details": {"cached_tokens": 20000, "cache_creation_tokens": 1000},
    "completion_tokens_details": None,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 20000,
}
ANTHROPIC_USAGE = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 20000,
    "output_tokens": 503,
}
# AWS Bedrock Converse response (API reference, bedrock-runtime `TokenUsage`): cache reads
# and writes are reported beside inputTokens (genai-prices' AWS extractor adds them to the
# input total likewise); cacheDetails breaks the writes down by TTL.
BEDROCK_CONVERSE_RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Done."}]}},
    "stopReason": "end_turn",
    "usage": {
        "inputTokens": 24,
        "outputTokens": 310,
        "totalTokens": 3334,
        "cacheReadInputTokens": 2000,
        "cacheWriteInputTokens": 1000,
        "cacheDetails": [{"inputTokens": 1000, "ttl": "5m"}],
    },
    "metrics": {"latencyMs": 1520},
}
# Mistral chat completion (docs.mistral.ai, API `ChatCompletionResponse.usage`):
# OpenAI's field names.
MISTRAL_RESPONSE = {
    "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
    "object": "chat.completion",
    "model": "mistral-small-latest",
    "usage": {"prompt_tokens": 16, "completion_tokens": 34, "total_tokens": 50},
    "created": 1702256327,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "..."}, "finish_reason": "stop"}
    ],
}
# Cohere v2 chat response (docs.cohere.com, Chat API v2 `usage`): billed units are what is
# charged, `tokens` what was processed (the prompt template included).
COHERE_V2_RESPONSE = {
    "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "..."}]},
    "usage": {
        "billed_units": {"input_tokens": 5, "output_tokens": 418},
        "tokens": {"input_tokens": 71, "output_tokens": 418},
    },
}
# Cohere v1 chat response: the same counts under `meta`.
COHERE_V1_RESPONSE = {
    "text": "...",
    "meta": {
        "api_version": {"version": "1"},
        "billed_units": {"input_tokens": 5, "output_tokens": 418},
        "tokens": {"input_tokens": 71, "output_tokens": 418},
    },
}
# Ollama /api/chat final response (github.com/ollama/ollama, docs/api.md): counts and
# durations (nanoseconds) beside the message.
OLLAMA_RESPONSE = {
    "model": "llama3.2",
    "created_at": "2023-08-04T19:22:45.499127Z",
    "message": {"role": "assistant", "content": "..."},
    "done": True,
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}
# OpenInference span attributes (Arize semantic conventions, `llm.token_count.*`): the
# prompt count includes its cache read and write details.
OPENINFERENCE_ATTRIBUTES = {
    "openinference.span.kind": "LLM",
    "llm.model_name": "gpt-4o-2024-08-06",
    "llm.token_count.prompt": 2006,
    "llm.token_count.completion": 300,
    "llm.token_count.total": 2306,
    "llm.token_count.prompt_details.cache_read": 1920,
    "llm.token_count.completion_details.reasoning": 64,
}
# OpenTelemetry GenAI semantic conventions (gen_ai.usage.*): input includes the cache.
OTEL_ATTRIBUTES = {
    "gen_ai.request.model": "claude-sonnet-4-20250514",
    "gen_ai.usage.input_tokens": 21050,
    "gen_ai.usage.output_tokens": 503,
    "gen_ai.usage.cache_read.input_tokens": 20000,
    "gen_ai.usage.cache_creation.input_tokens": 1000,
}


def counts(u: TokenUsage) -> tuple[int, int, int, int, int]:
    return (
        u.input_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.output_tokens,
        u.reasoning_tokens,
    )


def test_vercel_ai_sdk_6_reads_the_input_total_and_its_details() -> None:
    usage = normalize_usage(VERCEL_V6_USAGE, provider="openai")

    assert usage.provider_shape == "vercel"
    assert counts(usage) == (86, 1920, 0, 300, 64)
    assert usage.total_tokens == VERCEL_V6_USAGE["totalTokens"]
    assert "totalTokens" not in usage.extra


def test_vercel_ai_sdk_6_details_win_whatever_the_provider() -> None:
    assert normalize_usage(VERCEL_V6_USAGE, provider="anthropic") == normalize_usage(
        VERCEL_V6_USAGE, provider="openai"
    )


def test_vercel_ai_sdk_5_from_its_anthropic_provider_keeps_the_cache_beside_input() -> None:
    usage = normalize_usage({"usage": VERCEL_V5_ANTHROPIC_USAGE}, provider="anthropic")

    assert counts(usage) == (4532, 5439, 0, 222, 0)
    assert usage.total_input_tokens == 4532 + 5439


def test_vercel_ai_sdk_5_from_openai_counts_cache_inside_input() -> None:
    payload = {"inputTokens": 2006, "outputTokens": 300, "totalTokens": 2306}
    usage = normalize_usage({**payload, "cachedInputTokens": 1920}, provider="openai")

    assert counts(usage) == (86, 1920, 0, 300, 0)


def test_litellm_anthropic_usage_reads_like_anthropic_itself() -> None:
    litellm = normalize_usage({"usage": LITELLM_ANTHROPIC_USAGE})

    assert litellm.provider_shape == "litellm"
    assert counts(litellm) == counts(normalize_usage(ANTHROPIC_USAGE)) == (50, 20000, 1000, 503, 0)
    assert litellm.total_tokens == LITELLM_ANTHROPIC_USAGE["total_tokens"]


def test_litellm_openai_usage_is_openai_chat() -> None:
    payload = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
    }
    assert counts(normalize_usage(payload)) == (86, 1920, 0, 300, 0)


def test_bedrock_converse_reports_cache_beside_input() -> None:
    usage = normalize_usage(BEDROCK_CONVERSE_RESPONSE)

    assert usage.provider_shape == "bedrock"
    assert counts(usage) == (24, 2000, 1000, 310, 0)
    assert usage.total_tokens == BEDROCK_CONVERSE_RESPONSE["usage"]["totalTokens"]
    assert usage.extra["cacheDetails"] == [{"inputTokens": 1000, "ttl": "5m"}]


def test_bedrock_without_cache_needs_no_hint() -> None:
    bare = {"inputTokens": 24, "outputTokens": 310, "totalTokens": 334}

    assert counts(normalize_usage(bare, provider="bedrock")) == (24, 0, 0, 310, 0)
    assert counts(normalize_usage(bare)) == (24, 0, 0, 310, 0)


def test_mistral_reads_as_openai_chat() -> None:
    usage = normalize_usage(MISTRAL_RESPONSE)

    assert usage.provider_shape == "openai_chat"
    assert counts(usage) == (16, 0, 0, 34, 0) and usage.total_tokens == 50


def test_cohere_v2_counts_billed_units_over_processed_tokens() -> None:
    usage = normalize_usage(COHERE_V2_RESPONSE)

    assert usage.provider_shape == "cohere"
    assert counts(usage) == (5, 0, 0, 418, 0)


def test_cohere_v1_meta_and_processed_tokens_alone() -> None:
    assert counts(normalize_usage(COHERE_V1_RESPONSE)) == (5, 0, 0, 418, 0)
    processed = {"tokens": {"input_tokens": 71, "output_tokens": 418}}
    assert counts(normalize_usage(processed)) == (71, 0, 0, 418, 0)


def test_ollama_counts_and_durations_without_the_message() -> None:
    usage = normalize_usage(OLLAMA_RESPONSE)

    assert usage.provider_shape == "ollama"
    assert counts(usage) == (26, 0, 0, 282, 0)
    assert usage.extra["eval_duration"] == 4535599000
    assert "message" not in usage.extra and "model" not in usage.extra


def test_openinference_prompt_includes_its_cache_details() -> None:
    usage = normalize_usage(OPENINFERENCE_ATTRIBUTES)

    assert usage.provider_shape == "openinference"
    assert counts(usage) == (86, 1920, 0, 300, 64)
    assert usage.total_tokens == OPENINFERENCE_ATTRIBUTES["llm.token_count.total"]
    assert usage.extra["llm.model_name"] == "gpt-4o-2024-08-06"


def test_one_anthropic_call_reported_six_ways_counts_the_same() -> None:
    ways = [
        normalize_usage(ANTHROPIC_USAGE),
        normalize_usage(LITELLM_ANTHROPIC_USAGE),
        normalize_usage(OTEL_ATTRIBUTES),
        normalize_usage(
            {
                "llm.token_count.prompt": 21050,
                "llm.token_count.completion": 503,
                "llm.token_count.prompt_details.cache_read": 20000,
                "llm.token_count.prompt_details.cache_write": 1000,
            }
        ),
        normalize_usage(
            {
                "inputTokens": 21050,
                "inputTokenDetails": {"cacheReadTokens": 20000, "cacheWriteTokens": 1000},
                "outputTokens": 503,
            }
        ),
        normalize_usage(
            {
                "inputTokens": 50,
                "cacheReadInputTokens": 20000,
                "cacheWriteInputTokens": 1000,
                "outputTokens": 503,
            }
        ),
    ]
    assert {counts(u) for u in ways} == {(50, 20000, 1000, 503, 0)}


@pytest.mark.parametrize(
    "payload",
    [
        {"tokens_used": 120, "model": "x"},
        {"usage": {"input": 10, "output": 2}},
        {"promptTokens": 10, "completionTokens": 2},
    ],
)
def test_a_usage_with_no_known_count_is_refused_naming_its_keys(payload: dict[str, Any]) -> None:
    with pytest.raises(UsageError) as caught:
        normalize_usage(payload)

    assert caught.value.field == "usage"
    inner = payload.get("usage", payload)
    assert all(key in str(caught.value) for key in inner)


def test_no_usage_at_all_is_still_an_empty_usage() -> None:
    for payload in (None, {}, {"usage": None}):
        assert normalize_usage(payload).provider_shape == "empty"


def test_stream_events_without_usage_are_skipped_not_refused() -> None:
    events = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 12, "input_tokens": 3}},
    ]
    assert counts(merge_stream(events)) == (3, 0, 0, 12, 0)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"inputTokens": -1, "outputTokens": 2}, "inputTokens"),
        ({"inputTokens": 10, "cacheReadInputTokens": 2.5}, "cacheReadInputTokens"),
        ({"prompt_eval_count": 3.5, "eval_count": 1}, "prompt_eval_count"),
        ({"billed_units": {"input_tokens": -3}}, "billed_units.input_tokens"),
        ({"llm.token_count.prompt": "-4"}, "llm.token_count.prompt"),
        ({"inputTokens": 10, "inputTokenDetails": {"cacheReadTokens": 11}}, "inputTokens"),
    ],
)
def test_negative_or_fractional_counts_are_refused_naming_the_field(
    payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(UsageError) as caught:
        normalize_usage(payload)

    assert caught.value.field == field
