"""Cost arithmetic from the price table, --prices overrides, and how dollars are shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_caption.api.usage import Usage
from beam_caption.cost.pricing import (
    cost_usd,
    find_price,
    format_usd,
    load_prices,
    lookup_price,
    unpriced_hint,
)
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


# -- names: what a gateway or deployment calls a model, and what must not match ---------------

@pytest.mark.parametrize(("name", "priced_as"), [
    ("gpt-5.4-nano", "gpt-5.4-nano"),
    ("GPT-5.4-Nano", "gpt-5.4-nano"),
    ("  gpt-5.4-nano ", "gpt-5.4-nano"),
    ("openai/gpt-5.4-nano", "gpt-5.4-nano"),            # OpenRouter, LiteLLM
    ("azure/gpt-4o-mini", "gpt-4o-mini"),               # LiteLLM's Azure route
    ("azure_ai/gpt-4.1-mini", "gpt-4.1-mini"),
    ("litellm_proxy/gpt-4.1-nano", "gpt-4.1-nano"),
    ("openrouter/openai/gpt-5.4-mini", "gpt-5.4-mini"),  # LiteLLM's route to OpenRouter
    ("OpenAI/GPT-4o", "gpt-4o"),
    ("gpt-5.4-nano-2026-03-17", "gpt-5.4-nano"),        # dated snapshots
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai/gpt-4.1-2025-04-14", "gpt-4.1"),
    ("o4-mini-2025-04-16", "o4-mini"),
    ("gpt-5.4-nano-20260317", "gpt-5.4-nano"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),          # a snapshot with a price of its own
    ("azure/gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
])
def test_gateway_names_and_dated_snapshots_find_their_model(name: str, priced_as: str) -> None:
    price = find_price(load_prices(), name)
    assert price is not None and price.model == priced_as


@pytest.mark.parametrize("name", [
    "gpt-5.4-nano-custom-finetune",   # starts like nano, but is another model: no guess
    "ft:gpt-4o-mini-2024-07-18:acme::9xYz1",             # fine-tunes have their own prices
    "openai/gpt-4o-mini:free",        # an OpenRouter variant priced differently
    "gpt-4o-mini-high",
    "gpt-5.4-nano-2026-13-01",        # not a date
    "gpt-5.4-nano-2026-03-17-preview",
    "gpt-5.4-nano-2026",
    "meta-llama/gpt-4o",              # another vendor's prefix
    "my-nano-deployment", "azure/my-nano-deployment",
    "chatgpt-4o-latest", "gpt-4", "gpt-5.4-na", "nano", "", "/",
])
def test_names_that_merely_look_alike_have_no_price(name: str) -> None:
    assert find_price(load_prices(), name) is None


def test_gpt_4o_and_gpt_4o_mini_never_take_each_others_price() -> None:
    table = load_prices()
    assert find_price(table, "gpt-4o").input == 2.50
    assert find_price(table, "gpt-4o-mini").input == 0.15
    assert find_price(table, "openai/gpt-4o-mini-2024-07-18").input == 0.15
    assert find_price(table, "gpt-4o-2024-05-13").input == 5.00


def test_price_as_bills_a_deployment_as_a_known_model() -> None:
    table = load_prices()
    price = lookup_price(table, "azure/captions-prod", price_as="gpt-4.1-mini")
    assert price is table["gpt-4.1-mini"]
    # --price-as wins over a name that has a price of its own, and is itself looked up by name.
    assert lookup_price(table, "gpt-4o", price_as="openai/gpt-4o-mini") is table["gpt-4o-mini"]
    assert lookup_price(table, "azure/captions-prod") is None
    with pytest.raises(ConfigError, match="--price-as gpt-9: no such model"):
        lookup_price(table, "azure/captions-prod", price_as="gpt-9")


def test_an_unknown_model_is_unknown_never_free() -> None:
    table = load_prices()
    price = lookup_price(table, "gpt-5.4-nano-custom-finetune")
    assert price is None
    assert cost_usd(price, Usage(1000, 100, 1100)) is None
    # The launcher's one warning can say what to do about it.
    assert unpriced_hint(table, "gpt-5.4-nano-custom-finetune") == (
        "if it is billed as gpt-5.4-nano, pass --price-as gpt-5.4-nano; otherwise add its price "
        "with --prices FILE")
    assert unpriced_hint(table, "openai/gpt-4o-mini:free").startswith(
        "if it is billed as gpt-4o-mini,")
    assert unpriced_hint(table, "azure/captions-prod").startswith("pass --price-as MODEL")


def test_unreported_usage_has_an_unknown_cost() -> None:
    nano = load_prices()["gpt-5.4-nano"]
    assert cost_usd(nano, Usage(reported=False)) is None
    assert cost_usd(nano, Usage()) == 0.0  # reported zeros are a real $0
    assert cost_usd(nano, Usage(2751, 112, 2863)) == pytest.approx(0.00069, abs=5e-7)


def test_an_override_replaces_the_builtin_entry_however_it_is_spelt(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {
        "GPT-5.4-Nano": {"input": 1, "cached_input": 0.5, "output": 2}}}))
    table = load_prices(str(path))
    assert "gpt-5.4-nano" not in table
    assert find_price(table, "gpt-5.4-nano").input == 1
    assert find_price(table, "openai/gpt-5.4-nano-2026-03-17").input == 1
