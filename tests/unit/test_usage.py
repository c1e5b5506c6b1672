"""Usage normalisation against the payloads providers really send."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.usage import TokenUsage, UsageError, cost_usd, merge_stream, normalize_usage

OPENAI_CHAT_USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_CHAT_RESPONSE = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Done.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": OPENAI_CHAT_USAGE,
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}
OPENAI_REASONING_USAGE = {
    "prompt_tokens": 75,
    "completion_tokens": 1186,
    "total_tokens": 1261,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 1024,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_RESPONSES_USAGE = {
    "input_tokens": 5000,
    "input_tokens_details": {"cached_tokens": 4096},
    "output_tokens": 1200,
    "output_tokens_details": {"reasoning_tokens": 832},
    "total_tokens": 6200,
}
ANTHROPIC_USAGE = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 20000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 503,
    "service_tier": "standard",
}
ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "Done."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": ANTHROPIC_USAGE,
}
GEMINI_RESPONSE = {
    "candidates": [{"content": {"parts": [{"text": "Done."}], "role": "model"}, "index": 0}],
    "usageMetadata": {
        "promptTokenCount": 12500,
        "candidatesTokenCount": 420,
        "totalTokenCount": 13870,
        "cachedContentTokenCount": 8000,
        "thoughtsTokenCount": 950,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12500}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 8000}],
    },
    "modelVersion": "gemini-2.5-pro",
    "responseId": "mfoeaOiRBavPz7IPzdKw0Qg",
}
OTEL_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-20250514",
    "gen_ai.usage.input_tokens": 21050,
    "gen_ai.usage.output_tokens": 503,
    "gen_ai.usage.cache_read.input_tokens": 20000,
    "gen_ai.usage.cache_creation.input_tokens": 1000,
    "gen_ai.response.finish_reasons": ["end_turn"],
}


def test_openai_chat_counts_cached_prompt_tokens_once() -> None:
    usage = normalize_usage(OPENAI_CHAT_RESPONSE)

    assert usage.provider_shape == "openai_chat"
    assert (usage.input_tokens, usage.cached_tokens, usage.output_tokens) == (86, 1920, 300)
    assert usage.total_input_tokens == OPENAI_CHAT_USAGE["prompt_tokens"]
    assert usage.total_tokens == OPENAI_CHAT_USAGE["total_tokens"]


def test_openai_chat_reasoning_stays_inside_output() -> None:
    usage = normalize_usage(OPENAI_REASONING_USAGE)

    assert usage.reasoning_tokens == 1024
    assert usage.output_tokens == 1186
    assert usage.total_tokens == 1261


def test_openai_chat_null_details_from_compatible_servers() -> None:
    payload = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    usage = normalize_usage(payload)

    assert (usage.input_tokens, usage.cache_read_tokens, usage.total_tokens) == (10, 0, 15)


def test_openai_responses_usage_from_a_completed_stream_event() -> None:
    event = {
        "type": "response.completed",
        "sequence_number": 57,
        "response": {
            "id": "resp_67ccd3a9da748190baa7f1570fe91ac6",
            "object": "response",
            "status": "completed",
            "model": "o4-mini-2025-04-16",
            "output": [],
            "usage": OPENAI_RESPONSES_USAGE,
        },
    }
    usage = normalize_usage(event)

    assert usage.provider_shape == "openai_responses"
    assert (usage.input_tokens, usage.cache_read_tokens) == (904, 4096)
    assert (usage.output_tokens, usage.reasoning_tokens) == (1200, 832)
    assert usage.total_input_tokens == 5000
    assert usage.total_tokens == OPENAI_RESPONSES_USAGE["total_tokens"]


def test_anthropic_cache_reads_and_writes_sit_beside_input() -> None:
    usage = normalize_usage(ANTHROPIC_MESSAGE)

    assert usage.provider_shape == "anthropic"
    assert usage.input_tokens == 50
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (20000, 1000)
    # What Anthropic bills as input: uncached + cache writes + cache reads.
    assert usage.total_input_tokens == 21050
    assert usage.total_tokens == 21553


def test_anthropic_stream_keeps_latest_cumulative_usage_never_adds() -> None:
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-20250514",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 472,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 1800,
                    "output_tokens": 2,
                    "service_tier": "standard",
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 503},
        },
        {"type": "message_stop"},
    ]
    usage = merge_stream(events)

    assert usage.provider_shape == "anthropic"
    assert (usage.input_tokens, usage.cache_read_tokens) == (472, 1800)
    assert usage.output_tokens == 503  # not 505: deltas are cumulative
    assert usage.extra == {"service_tier": "standard"}


def test_anthropic_stream_with_full_cumulative_deltas() -> None:
    start = {"input_tokens": 10, "cache_read_input_tokens": 0, "output_tokens": 1}
    delta = {"input_tokens": 10, "cache_read_input_tokens": 4000, "output_tokens": 120}

    usage = merge_stream([{"usage": start}, {"usage": delta}, {"usage": delta}])

    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (10, 4000, 120)
    assert TokenUsage.latest(normalize_usage(start), normalize_usage(delta)) == usage


def test_gemini_wrapped_and_bare_agree_with_provider_totals() -> None:
    wrapped = normalize_usage(GEMINI_RESPONSE)
    bare = normalize_usage(GEMINI_RESPONSE["usageMetadata"])

    assert wrapped == bare
    assert wrapped.provider_shape == "gemini"
    assert (wrapped.input_tokens, wrapped.cache_read_tokens) == (4500, 8000)
    # candidatesTokenCount excludes thoughts; Tally's output includes them.
    assert (wrapped.output_tokens, wrapped.reasoning_tokens) == (1370, 950)
    assert wrapped.total_input_tokens == 12500
    assert wrapped.total_tokens == 13870
    assert wrapped.extra["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": 12500}]


def test_gemini_python_sdk_dump_and_tool_use_prompt() -> None:
    payload = {
        "usage_metadata": {
            "prompt_token_count": 900,
            "cached_content_token_count": 600,
            "tool_use_prompt_token_count": 150,
            "candidates_token_count": 80,
            "thoughts_token_count": 40,
            "total_token_count": 1170,
        }
    }
    usage = normalize_usage(payload)

    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (450, 600, 120)
    assert usage.total_tokens == 1170


def test_otel_input_includes_cache_and_other_attributes_are_kept() -> None:
    usage = normalize_usage(OTEL_ATTRIBUTES)

    assert usage.provider_shape == "otel"
    assert usage.input_tokens == 50
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (20000, 1000)
    assert usage.total_input_tokens == OTEL_ATTRIBUTES["gen_ai.usage.input_tokens"]
    assert usage.extra["gen_ai.request.model"] == "claude-sonnet-4-20250514"
    assert "gen_ai.usage.input_tokens" not in usage.extra


def test_otel_reasoning_attribute() -> None:
    attrs = {
        "gen_ai.usage.input_tokens": 75,
        "gen_ai.usage.output_tokens": 1186,
        "gen_ai.usage.reasoning.output_tokens": 1024,
    }
    assert normalize_usage(attrs).reasoning_tokens == 1024


def test_same_call_reported_three_ways_gives_the_same_counts() -> None:
    anthropic = normalize_usage(ANTHROPIC_USAGE)
    otel = normalize_usage(OTEL_ATTRIBUTES)
    fields = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

    assert [getattr(anthropic, f) for f in fields] == [getattr(otel, f) for f in fields]


@pytest.mark.parametrize("provider", ["openai", "anthropic", None])
def test_bare_input_output_reads_the_same_under_any_hint(provider: str | None) -> None:
    usage = normalize_usage({"input_tokens": 120, "output_tokens": 40}, provider=provider)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (120, 40, 160)
    expected = "openai_responses" if provider == "openai" else "anthropic"
    assert usage.provider_shape == expected


@pytest.mark.parametrize(
    "payload", [ANTHROPIC_USAGE, OPENAI_CHAT_USAGE, GEMINI_RESPONSE, OTEL_ATTRIBUTES]
)
def test_tally_shape_round_trips(payload: dict[str, Any]) -> None:
    usage = normalize_usage(payload)
    dumped = usage.model_dump()

    assert normalize_usage(dumped) == usage
    assert TokenUsage.model_validate(dumped) == usage


def test_unknown_keys_are_kept_as_metadata() -> None:
    usage = normalize_usage(OPENAI_CHAT_USAGE)

    assert usage.extra["prompt_tokens_details"] == {"audio_tokens": 0}
    assert usage.extra["completion_tokens_details"]["accepted_prediction_tokens"] == 0
    assert "total_tokens" not in usage.extra
    anthropic = normalize_usage(ANTHROPIC_USAGE)
    assert anthropic.extra["service_tier"] == "standard"
    assert anthropic.extra["cache_creation"]["ephemeral_5m_input_tokens"] == 1000


@pytest.mark.parametrize("payload", [None, {}, {"usage": None}])
def test_missing_usage_is_zero(payload: dict[str, Any] | None) -> None:
    usage = normalize_usage(payload)

    assert usage.total_tokens == 0
    assert usage.provider_shape == "empty"


def test_estimates_tokens_from_character_counts() -> None:
    usage = normalize_usage({"prompt_chars": 4000, "completion_chars": 801})

    assert (usage.input_tokens, usage.output_tokens) == (1000, 201)
    assert usage.estimated is True
    assert usage.provider_shape == "text"


def test_estimates_tokens_from_text() -> None:
    usage = normalize_usage({"input_text": "x" * 10, "output_text": "héllo"})

    assert (usage.input_tokens, usage.output_tokens) == (3, 2)
    assert usage.estimated


def test_real_counts_are_not_marked_estimated() -> None:
    assert not normalize_usage(ANTHROPIC_USAGE).estimated


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"prompt_tokens": -5, "completion_tokens": 1}, "prompt_tokens"),
        ({"input_tokens": "many", "output_tokens": 1}, "input_tokens"),
        ({"input_tokens": 1, "cache_read_input_tokens": 1.5}, "cache_read_input_tokens"),
        ({"prompt_tokens": 3, "completion_tokens": True}, "completion_tokens"),
        (
            {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": -1}},
            "prompt_tokens_details.cached_tokens",
        ),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}}, "prompt_tokens"),
        ({"usageMetadata": {"promptTokenCount": [3]}}, "promptTokenCount"),
        ({"gen_ai.usage.output_tokens": -2}, "gen_ai.usage.output_tokens"),
        ({"prompt_chars": -1}, "prompt_chars"),
        ({"input_text": 42}, "input_text"),
        ({"usage": "lots"}, "usage"),
        ({"input_tokens": 1, "provider_shape": "mystery"}, "provider_shape"),
    ],
)
def test_bad_counts_raise_naming_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError) as caught:
        normalize_usage(payload)

    assert caught.value.field == field
    assert field in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_whole_number_floats_and_numeric_strings_are_accepted() -> None:
    usage = normalize_usage({"gen_ai.usage.input_tokens": "120", "gen_ai.usage.output_tokens": 7.0})

    assert (usage.input_tokens, usage.output_tokens) == (120, 7)


def test_summing_calls_of_a_run() -> None:
    run = sum([normalize_usage(OPENAI_CHAT_USAGE), normalize_usage(ANTHROPIC_MESSAGE)])

    assert isinstance(run, TokenUsage)
    assert run.total_input_tokens == 2006 + 21050
    assert run.cache_read_tokens == 1920 + 20000
    assert run.output_tokens == 300 + 503
    assert run.provider_shape == "mixed"


def test_sum_adds_numeric_metadata_and_keeps_the_rest() -> None:
    a = normalize_usage({**ANTHROPIC_USAGE, "server_tool_use": {"web_search_requests": 2}})
    b = normalize_usage({**ANTHROPIC_USAGE, "server_tool_use": {"web_search_requests": 1}})

    total = a + b
    assert total.extra["server_tool_use"] == {"web_search_requests": 3}
    assert total.extra["service_tier"] == "standard"
    assert total.provider_shape == "anthropic"


def test_cost_prices_each_kind_of_token_once() -> None:
    usage = normalize_usage(ANTHROPIC_USAGE)
    prices = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cached_input_per_mtok": 0.30}

    with_write_price = cost_usd(usage, **prices, cache_write_per_mtok=3.75)
    without_write_price = cost_usd(usage, **prices)

    # 50 x $3 + 503 x $15 + 20000 x $0.30 + 1000 x $3.75, per million tokens
    assert with_write_price == pytest.approx(0.017445)
    assert without_write_price == pytest.approx(0.017445 - 1000 * 0.75 / 1e6)


def test_cost_of_openai_chat_with_cache() -> None:
    usage = normalize_usage(OPENAI_CHAT_USAGE)
    cost = cost_usd(usage, input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25)

    assert cost == pytest.approx((86 * 2.5 + 1920 * 1.25 + 300 * 10.0) / 1e6)


counts = st.integers(min_value=0, max_value=10**9)


@st.composite
def openai_chat_payloads(draw: st.DrawFn) -> dict[str, Any]:
    prompt = draw(counts)
    cached = draw(st.integers(min_value=0, max_value=prompt))
    completion = draw(counts)
    reasoning = draw(st.integers(min_value=0, max_value=completion))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


usages = st.builds(
    TokenUsage,
    input_tokens=counts,
    output_tokens=counts,
    cache_read_tokens=counts,
    cache_write_tokens=counts,
    reasoning_tokens=counts,
    estimated=st.booleans(),
    provider_shape=st.sampled_from(["openai_chat", "anthropic", "gemini", "otel", "text"]),
    extra=st.dictionaries(st.sampled_from(["a", "b", "c"]), counts, max_size=3),
)


@given(openai_chat_payloads())
def test_openai_chat_totals_match_the_provider(payload: dict[str, Any]) -> None:
    usage = normalize_usage(payload)

    assert usage.total_input_tokens == payload["prompt_tokens"]
    assert usage.cache_read_tokens <= usage.total_input_tokens
    assert usage.total_tokens == payload["total_tokens"]


@given(counts, counts, counts, counts)
def test_anthropic_total_input_is_the_sum_of_its_parts(
    uncached: int, read: int, write: int, out: int
) -> None:
    payload = {
        "input_tokens": uncached,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
        "output_tokens": out,
    }
    usage = normalize_usage(payload)

    assert usage.total_input_tokens == uncached + read + write
    assert usage.input_tokens == uncached


@given(usages, usages, usages)
def test_sums_are_associative(a: TokenUsage, b: TokenUsage, c: TokenUsage) -> None:
    assert (a + b) + c == a + (b + c)


@given(usages)
def test_empty_usage_is_the_identity_of_sums(usage: TokenUsage) -> None:
    assert normalize_usage(None) + usage == usage
    assert usage + normalize_usage({}) == usage


@given(usages)
def test_any_usage_round_trips_through_its_dump(usage: TokenUsage) -> None:
    assert normalize_usage(usage.model_dump()) == usage


@given(st.lists(st.tuples(counts, counts), min_size=1, max_size=8))
def test_stream_result_is_the_last_cumulative_snapshot(steps: list[tuple[int, int]]) -> None:
    # Cumulative: each snapshot is at least the previous one.
    snapshots, read, out = [], 0, 0
    for read_step, out_step in steps:
        read, out = read + read_step, out + out_step
        snapshots.append({"input_tokens": 7, "cache_read_input_tokens": read, "output_tokens": out})

    usage = merge_stream({"usage": snapshot} for snapshot in snapshots)

    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (7, read, out)


@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=10**7))
def test_estimate_is_chars_over_four_rounded_up(prompt_chars: int, completion_chars: int) -> None:
    usage = normalize_usage({"prompt_chars": prompt_chars, "completion_chars": completion_chars})

    assert usage.input_tokens == math.ceil(prompt_chars / 4)
    assert usage.output_tokens == math.ceil(completion_chars / 4)
    assert usage.estimated


def test_a_count_under_two_aliases_reads_the_first_and_checks_both() -> None:
    both = {"promptTokenCount": 900, "prompt_token_count": 700, "candidatesTokenCount": 10}

    assert normalize_usage(both).input_tokens == 900
    with pytest.raises(UsageError) as caught:
        normalize_usage({**both, "prompt_token_count": -1})
    assert caught.value.field == "prompt_token_count"


def test_a_mapping_that_is_not_a_dict_reads_like_one() -> None:
    usage = normalize_usage(MappingProxyType({"usage": MappingProxyType(ANTHROPIC_USAGE)}))

    assert usage == normalize_usage(ANTHROPIC_USAGE)
