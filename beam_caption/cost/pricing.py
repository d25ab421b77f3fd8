"""The price table (cost/prices.json plus --prices overrides) and the cost of a usage."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from beam_caption.api.usage import Usage
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
    if rule and rule.get("rule") not in ("patch", "tile"):
        raise ConfigError(f"{origin}: model {model!r} image_tokens.rule must be 'patch' or 'tile'")
    return ModelPrice(model=model, batch_discount=discount, image_tokens=dict(rule),
                      reasoning=bool(entry.get("reasoning", False)), **values)


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
    """The built-in table, with models from the `overrides` file (if any) replacing or added."""
    table = _read_table(resources.files("beam_caption.cost").joinpath("prices.json").read_text(),
                        "beam_caption/cost/prices.json")
    if overrides:
        path = Path(overrides)
        if not path.is_file():
            raise ConfigError(f"--prices file not found: {overrides}")
        table.update(_read_table(path.read_text(encoding="utf-8"), overrides))
    return table


def cost_usd(price: ModelPrice | None, usage: Usage | None, *, batch: bool = False) -> float | None:
    """What `usage` costs at `price` (None when the model has no price or nothing was billed)."""
    if price is None or usage is None:
        return None
    return price.cost_usd(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                          batch=batch)
