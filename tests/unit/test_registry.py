"""The model registry: validation that names the field, pricing, hot reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tally.errors import ConfigError
from tally.registry import ModelRegistry, load_models
from tally.settings import CONFIG_DIR
from tally.usage import TokenUsage

MODEL = """
models:
  - name: m1
    provider: p
    tier: standard
    prices: {input: 3.0, output: 15.0, cached_input: 0.3, cache_write: 3.75}
    context_window: 200000
    capabilities: {default: 0.8, security: 0.9}
    subscription: s
"""


def test_the_shipped_registry_is_valid() -> None:
    names = [m.name for m in load_models(CONFIG_DIR / "models.yaml")]
    assert len(names) == len(set(names)) >= 3


def test_cost_prices_cache_reads_and_writes_at_their_own_rates(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(MODEL)
    model = ModelRegistry(path).get("m1")
    assert model is not None
    usage = TokenUsage(
        input_tokens=1_000_000,
        output_tokens=100_000,
        cache_read_tokens=2_000_000,
        cache_write_tokens=1_000_000,
    )
    assert model.cost(usage) == pytest.approx(3.0 + 1.5 + 0.6 + 3.75)
    assert model.capability("security") == 0.9 and model.capability("docs") == 0.8


def test_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(MODEL.replace("tier: standard", "tier: platinum"))
    with pytest.raises(ConfigError, match=r"models\.yaml: models\.0\.tier"):
        load_models(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_models(tmp_path / "missing.yaml")


def test_an_edited_file_is_reloaded_and_a_broken_edit_keeps_the_old_models(
    tmp_path: Path,
) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(MODEL)
    registry = ModelRegistry(path)
    path.write_text(MODEL.replace("name: m1", "name: m2"))
    os.utime(path, (1, 2_000_000_000))
    assert [m.name for m in registry.models()] == ["m2"]
    path.write_text("models: []")
    os.utime(path, (1, 2_000_000_100))
    assert [m.name for m in registry.models()] == ["m2"]
    path.write_text(MODEL.replace("name: m1", "name: m3"))
    os.utime(path, (1, 2_000_000_200))
    assert registry.get("m3") is not None
