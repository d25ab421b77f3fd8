"""The price table (cost/prices.json plus --prices overrides), the price of a model however a
gateway or deployment names it, and the cost of a usage."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from beam_caption.api.usage import Usage
from beam_caption.cost.tokens import IMAGE_RULES
from beam_caption.errors import ConfigError


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for one model, its batch discount and its image token rule."""

    model: str
    input: float
    cached_input: float
    output: float
    batch_discount: float = 0.5
    image_tokens: dict[str, Any] = field(default_factory=dict)
    reasoning: bool = False
    # Whose API serves the model natively (openai, anthropic, gemini): what `estimate` groups
    # its cheapest-per-provider comparison by.
    provider: str = "openai"

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
                 batch: bool = False) -> float:
        """Dollars for one response's usage; cached prompt tokens at the cached price."""
        uncached = max(0, prompt_tokens - cached_tokens)
        dollars = (uncached * self.input + cached_tokens * self.cached_input
                   + completion_tokens * self.output) / 1_000_000
        return dollars * (self.batch_discount if batch else 1.0)


def format_usd(value: float | None, significant: int = 4, decimals: int | None = None) -> str:
    """Dollars for people, the one money format of every printed table, page and log line.

    Sums of a dollar or more show cents ("$1,234.56"); smaller ones keep `significant` digits
    ("$0.001146", "$0.1433"). `decimals` instead fixes the number of decimals ("$2.0000"), for
    figures that should keep their width while they change. None is "unknown" (no price).
    """
    if value is None:
        return "unknown"
    if decimals is not None:
        return f"${value:,.{decimals}f}"
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    decimals = max(2, significant - 1 - math.floor(math.log10(abs(value))))
    return f"${value:,.{decimals}f}"


_REQUIRED = ("input", "cached_input", "output")


def _parse_entry(model: str, entry: dict[str, Any], origin: str) -> ModelPrice:
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ConfigError(f"{origin}: model {model!r} lacks {', '.join(missing)}")
    try:
        values = {k: float(entry[k]) for k in _REQUIRED}
        discount = float(entry.get("batch_discount", 0.5))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: model {model!r} has a non-numeric price ({exc})") from None
    if any(v < 0 for v in values.values()) or not 0 <= discount <= 1:
        raise ConfigError(f"{origin}: model {model!r} has a negative price or a batch_discount "
                          "outside 0..1")
    rule = entry.get("image_tokens") or {}
    if rule and rule.get("rule") not in IMAGE_RULES:
        raise ConfigError(f"{origin}: model {model!r} image_tokens.rule must be one of "
                          f"{', '.join(IMAGE_RULES)}")
    return ModelPrice(model=model, batch_discount=discount, image_tokens=dict(rule),
                      reasoning=bool(entry.get("reasoning", False)),
                      provider=str(entry.get("provider", "openai")), **values)


def _read_table(text: str, origin: str) -> dict[str, ModelPrice]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin} is not valid JSON: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(f'{origin} must be an object with a "models" object')
    return {name: _parse_entry(name, entry, origin) for name, entry in models.items()}


def load_prices(overrides: str | None = None) -> dict[str, ModelPrice]:
    """The built-in table, with models from the `overrides` file (if any) replacing or added.

    An override replaces a built-in entry of the same name however it is spelt ("GPT-4o" and
    "gpt-4o"), so a lookup never finds the built-in price behind the user's own.
    """
    table = _read_table(resources.files("beam_caption.cost").joinpath("prices.json").read_text(),
                        "beam_caption/cost/prices.json")
    if overrides:
        path = Path(overrides)
        if not path.is_file():
            raise ConfigError(f"--prices file not found: {overrides}")
        extra = _read_table(path.read_text(encoding="utf-8"), overrides)
        replaced = {model_key(name) for name in extra}
        table = {n: p for n, p in table.items() if model_key(n) not in replaced} | extra
    return table


# Prefixes that gateways and hosts put before OpenAI's model names: LiteLLM's provider routes
# (openai/, azure/, azure_ai/, litellm_proxy/), OpenRouter's vendor (openai/), and LiteLLM's
# route to OpenRouter (openrouter/openai/...). Any other prefix names another vendor's model.
PROVIDER_PREFIXES = frozenset({"openai", "azure", "azure_ai", "openrouter", "litellm_proxy"})
# The same routes to Anthropic's and Google's models (LiteLLM's anthropic/ and gemini/,
# OpenRouter's anthropic/ and google/, the Gemini API's own models/ resource prefix): stripped
# only when the model found belongs to that vendor, so `anthropic/gpt-4o` stays unpriced.
VENDOR_PREFIXES = {"anthropic": "anthropic", "gemini": "gemini", "google": "gemini",
                   "models": "gemini"}
# A dated snapshot's suffix: -2026-03-17 (OpenAI) or -20260317, a real month and day.
_SNAPSHOT = re.compile(r"-20\d\d(?:-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
                       r"|(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))$")


def model_key(name: str) -> str:
    """`name` as the price table spells models: trimmed, lower-case, without the provider
    prefixes of gateways (`openrouter/openai/gpt-5.4-nano` -> `gpt-5.4-nano`)."""
    key = name.strip().lower()
    while "/" in key and key.split("/", 1)[0] in PROVIDER_PREFIXES:
        key = key.split("/", 1)[1]
    return key


def find_price(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    """The price of `model` by name: as written, else by `model_key` (case, provider prefix),
    else a dated snapshot at its model's price unless the table lists the snapshot itself.

    Nothing else matches: a fine-tune (`ft:...`), a variant (`...:free`) or any other name
    that merely starts like a known model has no price, because a wrong price is worse than
    none (the launcher warns about none; see `unpriced_hint`).
    """
    if model in prices:
        return prices[model]
    by_key = {model_key(name): price for name, price in prices.items()}
    key = model_key(model)
    vendor = VENDOR_PREFIXES.get(key.split("/", 1)[0]) if "/" in key else None
    if vendor is not None:
        key = key.split("/", 1)[1]
    price = by_key.get(key) or by_key.get(_SNAPSHOT.sub("", key))
    if price is not None and vendor is not None and price.provider != vendor:
        return None
    return price


def lookup_price(prices: Mapping[str, ModelPrice], model: str, *,
                 price_as: str | None = None) -> ModelPrice | None:
    """The price a run bills `model` at: that of `price_as` when given (--price-as: an Azure
    deployment or a gateway alias priced as a known model, whose image-token rule and
    reasoning flag it takes too), else `find_price(model)`; None for an unknown model.

    Raises ConfigError when `price_as` itself has no price: it is the user's explicit word.
    """
    if not price_as:
        return find_price(prices, model)
    price = find_price(prices, price_as)
    if price is None:
        raise ConfigError(f"--price-as {price_as}: no such model in the price table (known: "
                          f"{', '.join(sorted(prices))}; add it with --prices FILE)")
    return price


def unpriced_hint(prices: Mapping[str, ModelPrice], model: str) -> str:
    """What to do about a model with no price, for the launcher's one warning: the known model
    its name starts with, if any, as a --price-as to consider."""
    key = _SNAPSHOT.sub("", model_key(model))
    near = max((name for name in prices
                if key.startswith(tuple(model_key(name) + sep for sep in "-:_"))),
               key=len, default=None)
    if near is not None:
        return (f"if it is billed as {near}, pass --price-as {near}; otherwise add its price "
                "with --prices FILE")
    return ("pass --price-as MODEL to bill it as a known model (an Azure deployment, a gateway "
            "alias), or add its price with --prices FILE")


def cost_usd(price: ModelPrice | None, usage: Usage | None, *, batch: bool = False) -> float | None:
    """What `usage` costs at `price`: None when the model has no price, nothing was billed, or
    the server reported no usage (an unknown cost is never shown as $0)."""
    if price is None or usage is None or not usage.reported:
        return None
    return price.cost_usd(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                          batch=batch)
