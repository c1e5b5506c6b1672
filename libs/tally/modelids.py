"""Model ids as providers and gateways spell them, reduced to the name a registry knows.

The same model reaches Tally as ``claude-sonnet-4-20250514`` (what Anthropic answers),
``anthropic/claude-sonnet-4`` (LiteLLM, OpenRouter), ``claude-sonnet-4@20250514`` (Vertex
AI), ``us.anthropic.claude-sonnet-4-20250514-v1:0`` (AWS Bedrock) or ``Claude-Sonnet-4``.
:func:`parse_model_id` strips what is not the model's name — case, a gateway's provider
prefix, a Bedrock region and version, a date or ``-latest`` suffix — and keeps the provider
the prefix named, so a registry entry or a catalogue price can be found for each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Bedrock's cross-region inference prefixes (``us.anthropic.…``).
_REGIONS = ("us", "eu", "apac", "global", "us-gov", "jp", "au", "ca")
#: Bedrock's model-id vendors: ``anthropic.claude-…``, ``meta.llama3-…``.
_BEDROCK_VENDORS = {
    "anthropic", "meta", "mistral", "cohere", "amazon", "ai21", "deepseek", "qwen", "openai",
    "writer", "google",
}  # fmt: skip
#: version suffixes: Bedrock ``-v1:0``, Vertex ``@20250514`` or ``@001``
_VERSION = re.compile(r"(-v\d+(:\d+)?|@[\w.-]+)$")
#: date and alias suffixes: ``-20250514``, ``-2024-08-06``, ``-0613``, ``-2411``, ``-latest``
_DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|\d{4}|latest)$")


@dataclass(frozen=True, slots=True)
class ModelId:
    """A model id taken apart.

    Attributes:
        name: the id in lower case, without provider prefix or version suffix.
        base: ``name`` without a date or ``-latest`` suffix (equal to it when it had none).
        provider: the provider a prefix named (``anthropic/…``, ``anthropic.…``), else None.
    """

    name: str
    base: str
    provider: str | None

    def candidates(self) -> tuple[str, ...]:
        """Names to look up, most specific first: the dated name, then its base."""
        return (self.name,) if self.base == self.name else (self.name, self.base)


def parse_model_id(model_id: str) -> ModelId:
    """Take a model id apart (see the module docstring).

    >>> parse_model_id("anthropic/Claude-Sonnet-4-20250514")
    ModelId(name='claude-sonnet-4-20250514', base='claude-sonnet-4', provider='anthropic')
    >>> parse_model_id("us.anthropic.claude-sonnet-4-20250514-v1:0").base
    'claude-sonnet-4'
    """
    text = model_id.strip().lower()
    provider = None
    if "/" in text:  # gateway/provider/model: the segment before the model names its maker
        parts = [p for p in text.split("/") if p]
        text = parts[-1] if parts else text
        provider = parts[-2] if len(parts) > 1 else None
    head, dot, rest = text.partition(".")
    if dot and head in _REGIONS and "." in rest:
        head, dot, rest = rest.partition(".")
    if dot and head in _BEDROCK_VENDORS and rest and not rest[0].isdigit():
        provider, text = provider or head, rest
    text = _VERSION.sub("", text)
    base = text
    while (stripped := _DATED.sub("", base)) != base and stripped:
        base = stripped
    return ModelId(text, base, provider)
