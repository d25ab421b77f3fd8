"""Cost arithmetic from the price table, --prices overrides, and how dollars are shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_caption.cost.pricing import format_usd, load_prices
from beam_caption.errors import ConfigError


def test_the_design_docs_measured_photo_costs_what_it_says() -> None:
    # shared/DESIGN.md: 2,751 input + 112 output tokens on gpt-5.4-nano = $0.00069.
    nano = load_prices()["gpt-5.4-nano"]
    assert nano.cost_usd(2751, 112) == pytest.approx(0.00069, abs=5e-7)


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-5.4-nano", (1000 * 0.20 + 1000 * 0.02 + 100 * 1.25) / 1e6),
    ("gpt-5.4-mini", (1000 * 0.75 + 1000 * 0.075 + 100 * 4.50) / 1e6),
    ("gpt-4.1-nano", (1000 * 0.10 + 1000 * 0.025 + 100 * 0.40) / 1e6),
    ("gpt-4.1-mini", (1000 * 0.40 + 1000 * 0.10 + 100 * 1.60) / 1e6),
    ("gpt-4o-mini", (1000 * 0.15 + 1000 * 0.075 + 100 * 0.60) / 1e6),
])
def test_cached_tokens_are_billed_at_the_cached_price(model: str, expected: float) -> None:
    price = load_prices()[model]
    assert price.cost_usd(2000, 100, cached_tokens=1000) == pytest.approx(expected)
    assert price.cost_usd(2000, 100, cached_tokens=1000, batch=True) == pytest.approx(expected / 2)


def test_every_model_has_a_rule_date_and_source() -> None:
    table = load_prices()
    for name in ("gpt-5.4-nano", "gpt-5.4-mini", "gpt-5.4", "gpt-5-nano", "gpt-5-mini",
                 "gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini", "gpt-4o"):
        assert table[name].image_tokens["rule"] in ("patch", "tile"), name
    table_file = Path(__file__).parents[2] / "beam_caption" / "cost" / "prices.json"
    raw = json.loads(table_file.read_text())
    for name, entry in raw["models"].items():
        assert entry["as_of"] and entry["source"], name


def test_overrides_replace_and_add_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {
        "gpt-5.4-nano": {"input": 1, "cached_input": 0.5, "output": 2},
        "llava-local": {"input": 0, "cached_input": 0, "output": 0},
    }}))
    table = load_prices(str(path))
    assert table["gpt-5.4-nano"].input == 1
    assert table["llava-local"].cost_usd(1000, 1000) == 0
    assert "gpt-4o" in table


@pytest.mark.parametrize("content", [
    "not json", '{"no_models": {}}', '{"models": {"m": {"input": 1}}}',
    '{"models": {"m": {"input": -1, "cached_input": 0, "output": 0}}}',
    '{"models": {"m": {"input": "x", "cached_input": 0, "output": 0}}}',
])
def test_bad_override_files_are_config_errors(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError):
        load_prices(str(path))


def test_missing_override_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_prices(str(tmp_path / "nope.json"))


def test_money_keeps_four_significant_digits_below_a_dollar_and_cents_above() -> None:
    # The one money format of the report, the page, the estimate and the progress line.
    assert [format_usd(v) for v in (None, 0, 0.000539, 0.1433, 1.2345, 52.437, 5244.4)] == [
        "unknown", "$0.00", "$0.0005390", "$0.1433", "$1.23", "$52.44", "$5,244.40"]
    assert format_usd(0.001146) == "$0.001146" and format_usd(0.000573) == "$0.0005730"
    assert format_usd(2.0, decimals=4) == "$2.0000"
    assert format_usd(1234.5, decimals=4) == "$1,234.5000"
