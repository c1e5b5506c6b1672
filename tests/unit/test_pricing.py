"""Model ids as providers spell them resolve to one price; money is exact micro-dollars."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.quota.fallback import fallback_micros, fallback_prices
from services.quota.subscriptions import Subscription
from tally.events import TokenTotals
from tally.modelids import parse_model_id
from tally.money import micros_to_usd, usd_text, usd_to_micros
from tally.pricing import Pricer
from tally.registry import ModelRegistry, ModelSpec, Prices
from tally.settings import CONFIG_DIR
from tally.usage import TokenUsage

AT = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(CONFIG_DIR / "models.yaml")


@pytest.mark.parametrize(
    ("model_id", "name"),
    [
        # Anthropic's API answers with the dated id; gateways prefix the provider
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("anthropic/claude-sonnet-4", "claude-sonnet-4"),
        ("Claude-Sonnet-4", "claude-sonnet-4"),
        ("claude-opus-4@20250514", "claude-opus-4"),  # Vertex AI
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),  # Bedrock
        ("openrouter/anthropic/claude-opus-4", "claude-opus-4"),
        # OpenAI: dated snapshots and LiteLLM prefixes
        ("gpt-5-2025-08-07", "gpt-5"),
        ("openai/gpt-5-mini", "gpt-5-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        # Google
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("google/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini/gemini-2.5-flash-latest", "gemini-2.5-flash"),
    ],
)
def test_provider_ids_resolve_to_the_registry_entry(
    registry: ModelRegistry, model_id: str, name: str
) -> None:
    spec = registry.resolve(model_id)
    assert spec is not None and spec.name == name


def test_ids_that_are_other_models_do_not_resolve(registry: ModelRegistry) -> None:
    for other in ("gpt-4o-2024-08-06", "claude-sonnet-4-5", "gemini-2.5-pro", "gpt-5-nano"):
        assert registry.resolve(other) is None


def test_parse_keeps_the_prefixed_provider() -> None:
    assert parse_model_id("anthropic/claude-sonnet-4-20250514").provider == "anthropic"
    assert parse_model_id("us.anthropic.claude-sonnet-4-20250514-v1:0").provider == "anthropic"
    assert parse_model_id("mistral-large-2411").base == "mistral-large"
    assert parse_model_id("gpt-4o-2024-08-06").base == "gpt-4o"
    assert parse_model_id("gemini-2.5-pro").provider is None


def test_aliases_match_like_names(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - {name: house-coder, provider: local, tier: local, context_window: 8000,\n"
        "     subscription: local, aliases: [qwen3-coder:30b],\n"
        "     prices: {input: 0.1, output: 0.2}}\n"
    )
    spec = ModelRegistry(path).resolve("ollama/Qwen3-Coder:30b")
    assert spec is not None and spec.name == "house-coder"


def test_registry_prices_override_the_catalogue(registry: ModelRegistry) -> None:
    usage = TokenUsage(input_tokens=1_000, output_tokens=100, cache_read_tokens=10_000)
    price = Pricer(registry).price(usage, "claude-sonnet-4-20250514", at=AT)

    assert price.source == "registry" and price.model == "claude-sonnet-4"
    assert price.micros == 1_000 * 3 + 100 * 15 + round(10_000 * 0.3)


@pytest.mark.parametrize(
    ("model_id", "provider"),
    [
        ("gpt-4o-2024-08-06", None),
        ("openai/gpt-4o-mini", None),
        ("gemini-2.5-pro", "google"),
        ("mistral-large-latest", "mistral"),
        ("command-r-plus", "cohere"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "bedrock"),
    ],
)
def test_models_outside_the_registry_are_priced_from_the_catalogue(
    registry: ModelRegistry, model_id: str, provider: str | None
) -> None:
    usage = TokenUsage(input_tokens=1_000, output_tokens=1_000)
    price = Pricer(registry).price(usage, model_id, provider=provider, at=AT)

    assert price.source == "catalogue" and price.known
    assert price.micros is not None and price.micros > 0


def test_catalogue_prices_cache_reads_and_writes_at_their_own_rates() -> None:
    usage = TokenUsage(input_tokens=1_000, cache_read_tokens=10_000, output_tokens=100)
    price = Pricer(None).price(usage, "gpt-4o-2024-08-06", at=AT)

    # $2.50 input, $1.25 cached input, $10 output per million tokens
    assert price.micros == 1_000 * 2.5 + 10_000 * 1.25 + 100 * 10


def test_an_unknown_model_has_no_price_not_a_zero_one(registry: ModelRegistry) -> None:
    usage = TokenUsage(input_tokens=1_000, output_tokens=100)
    for model in ("acme-inhouse-coder-7b", "", None):
        price = Pricer(registry).price(usage, model, at=AT)
        assert price.micros is None and not price.known and price.source == "unknown"


def test_a_free_local_model_is_known_at_zero(registry: ModelRegistry) -> None:
    price = Pricer(registry).price(TokenUsage(input_tokens=5_000), "qwen3-coder-local", at=AT)
    assert price.known and price.micros == 0


def test_prices_are_exact_micros_rounded_once_half_to_even() -> None:
    prices = Prices(input=0.075, output=0.3, cached_input=0.01875)
    # 3 x 0.075 + 1 x 0.3 = 0.525 micro-dollars: rounds to 1, never accumulates float error
    assert prices.micros(TokenUsage(input_tokens=3, output_tokens=1)) == 1
    assert prices.micros(TokenUsage(input_tokens=30)) == 2  # 2.25
    assert prices.micros(TokenUsage(cache_read_tokens=40)) == 1  # 0.75
    assert prices.micros(TokenUsage(input_tokens=1_000_000)) == 75_000


def test_money_conversions() -> None:
    assert usd_to_micros(0.0585) == 58_500
    assert usd_to_micros("0.0000025") == 2 and usd_to_micros("0.0000035") == 4  # half to even
    assert micros_to_usd(58_500) == 0.0585
    assert sum(usd_to_micros(0.0195) for _ in range(3)) == 58_500
    assert usd_text(58_500) == "$0.0585" and usd_text(None) == "—"


def test_fallback_is_the_highest_price_among_the_subscriptions_models(
    registry: ModelRegistry,
) -> None:
    subs = [
        Subscription(name="api-payg", kind="payg"),
        Subscription(name="empty", kind="payg"),
        Subscription(name="set", kind="payg", fallback_prices=Prices(input=9.0, output=9.0)),
    ]
    fallback = fallback_prices(subs, registry.models())

    payg = fallback["api-payg"]  # gpt-5-mini and gemini-2.5-flash
    assert (payg.input, payg.output, payg.cached_input, payg.cache_write) == (0.3, 2.5, 0.075, 0.3)
    assert fallback["empty"].output == 75.0  # no model of its own: the dearest of all
    assert fallback["set"].input == 9.0
    unpriced = TokenTotals(input_tokens=1_000, output_tokens=300)
    assert fallback_micros(fallback, "api-payg", unpriced) == 300 + 750
    assert fallback_micros(fallback, "api-payg", TokenTotals()) == 0


def test_model_spec_cost_and_micros_agree(registry: ModelRegistry) -> None:
    spec = registry.get("gpt-5")
    assert isinstance(spec, ModelSpec)
    usage = TokenUsage(input_tokens=3_000, cache_read_tokens=9_000, output_tokens=800)
    assert spec.cost_micros(usage) == usd_to_micros(spec.cost(usage))


def test_flat_catalogue_prices_agree_with_the_catalogues_own_calculation() -> None:
    """The direct path for flat prices gives the micros genai-prices itself computes."""
    from genai_prices import data_snapshot

    from tally.pricing import _Ref

    usage = TokenUsage(
        input_tokens=123_457, output_tokens=4_321, cache_read_tokens=50_001, cache_write_tokens=777
    )
    checked = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            ref = _Ref(provider, model)
            direct = ref.micros(usage, AT)
            if ref._rates[AT.date()] is not None:
                checked += 1
                assert direct == ref._calculated(usage, AT), (provider.id, model.id)
    assert checked > 100
