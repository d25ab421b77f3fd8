"""Token rules, prices and answer identity across providers: Anthropic's area rule, Gemini's
tiles, vendor-prefixed names, the cheapest model of each provider, and the provider in the
request_key (but not for OpenAI, whose earlier keys must stay valid)."""

from __future__ import annotations

import pytest

from beam_caption.config import CaptionConfig
from beam_caption.cost import tokens
from beam_caption.cost.pricing import find_price, load_prices
from beam_caption.errors import ConfigError
from beam_caption.estimate.bill import cheapest_by_provider


@pytest.mark.parametrize(("size", "sent", "count"), [
    ((800, 600), (800, 600), 640),            # 480,000 / 750
    ((1568, 700), (1568, 700), 1464),         # at the long-side limit, under 1.15 MP
    ((1569, 100), (1568, 99), 207),           # one pixel over: downscaled, aspect kept
    ((1072, 1072), (1072, 1072), 1533),       # 1,149,184 px: under the area limit
    ((1073, 1073), (1072, 1072), 1533),       # 1,151,329 px: just over it
    ((4032, 3024), (1238, 928), 1532),        # a 12 MP phone photo
])
def test_anthropic_area_rule(size, sent, count) -> None:
    assert tokens.area_size(*size) == sent
    assert tokens.image_tokens({"rule": "area"}, *size) == count


@pytest.mark.parametrize(("size", "count"), [
    ((384, 384), 258), ((100, 384), 258),     # both sides <= 384: one tile
    ((385, 200), 258),                        # larger, but one 768 px tile
    ((768, 768), 258), ((769, 768), 516),
    ((1600, 1200), 6 * 258), ((4032, 3024), 6 * 4 * 258),
])
def test_gemini_tile_rule(size, count) -> None:
    assert tokens.image_tokens({"rule": "gemini_tile"}, *size) == count


def test_gemini_fixed_budget_per_image() -> None:
    assert tokens.image_tokens({"rule": "gemini_tile", "per_image": 280}, 4000, 3000) == 280


def test_every_price_has_its_source_date_and_a_known_provider() -> None:
    import json
    from importlib import resources

    raw = json.loads(resources.files("beam_caption.cost").joinpath("prices.json").read_text())
    for name, entry in raw["models"].items():
        assert entry.get("as_of") and entry.get("source"), name
    table = load_prices()
    providers = {p.provider for p in table.values()}
    assert providers == {"openai", "anthropic", "gemini"}
    claude = {n for n, p in table.items() if p.provider == "anthropic"}
    gemini = {n for n, p in table.items() if p.provider == "gemini"}
    assert {"haiku", "sonnet", "opus"} <= {w for n in claude for w in n.split("-")}
    assert any("flash-lite" in n for n in gemini) and any("pro" in n for n in gemini)
    assert all(table[n].batch_discount == 0.5 for n in claude | gemini)


@pytest.mark.parametrize(("name", "model"), [
    ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("openrouter/anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("gemini/gemini-2.5-flash", "gemini-2.5-flash"),
    ("google/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ("models/gemini-2.5-pro", "gemini-2.5-pro"),
])
def test_vendor_prefixed_names_find_their_model(name: str, model: str) -> None:
    price = find_price(load_prices(), name)
    assert price is not None and price.model == model


@pytest.mark.parametrize("name", ["anthropic/gpt-4o", "google/claude-haiku-4-5",
                                  "gemini/gpt-5.4-nano"])
def test_a_vendor_prefix_never_prices_another_vendors_model(name: str) -> None:
    assert find_price(load_prices(), name) is None


def test_cheapest_of_each_provider() -> None:
    lines = [{"model": "a", "provider": "openai", "realtime_usd": 3.0},
             {"model": "b", "provider": "openai", "realtime_usd": 1.0},
             {"model": "c", "provider": "gemini", "realtime_usd": 2.0},
             {"model": "d", "provider": "anthropic", "realtime_usd": None},
             {"model": "e", "provider": None, "realtime_usd": 0.1}]
    assert [ln["model"] for ln in cheapest_by_provider(lines)] == ["b", "c"]


def test_the_provider_is_part_of_the_request_key_except_openais() -> None:
    kwargs = {"model": "claude-haiku-4-5", "base_url": "http://127.0.0.1:9", "run_id": "r"}
    openai = CaptionConfig.create(**kwargs)
    anthropic = CaptionConfig.create(provider="anthropic", **kwargs)
    gemini = CaptionConfig.create(provider="gemini", **kwargs)
    keys = {c.request_key("a" * 64) for c in (openai, anthropic, gemini)}
    assert len(keys) == 3
    # OpenAI's key is the one earlier outputs hold: unchanged by the provider field.
    moved = CaptionConfig.create(**{**kwargs, "base_url": "http://127.0.0.1:10"})
    assert moved.request_key("a" * 64) == openai.request_key("a" * 64)
    assert anthropic.endpoint.api_key_env == "ANTHROPIC_API_KEY"
    assert gemini.endpoint.api_key_env == "GEMINI_API_KEY"
    assert gemini.endpoint.request_url("gemini-2.5-flash") == \
        "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent"


def test_default_base_urls_and_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    made = {p: CaptionConfig.create(provider=p).endpoint.base_url
            for p in ("openai", "anthropic", "gemini")}
    assert made == {"openai": "https://api.openai.com/v1",
                    "anthropic": "https://api.anthropic.com",
                    "gemini": "https://generativelanguage.googleapis.com"}
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:7/")
    assert CaptionConfig.create(provider="anthropic").endpoint.base_url == "http://127.0.0.1:7"


def test_unknown_provider_and_unsupported_schema_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        CaptionConfig.create(provider="nope")
    with pytest.raises(ConfigError, match="schema-mode prompt"):
        CaptionConfig.create(provider="gemini", response_format={"type": "json_object"})


@pytest.mark.parametrize(("flags", "model"), [
    ((), "gpt-5.4-nano"),
    (("--provider", "anthropic"), "claude-haiku-4-5"),
    (("--provider", "gemini"), "gemini-2.5-flash-lite"),
    (("--provider", "gemini", "--model", "gemini-2.5-pro"), "gemini-2.5-pro"),
])
def test_without_model_each_provider_uses_its_own_default(flags, model, monkeypatch) -> None:
    # A GPT model name sent to Anthropic's API would fail every request; the default follows
    # the provider, on the command line and in the Python API alike.
    from beam_caption.cli import build_parser
    from beam_caption.cli.run_config import build_run_config

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    args, _ = build_parser("run").parse_known_args(
        ["run", "--input", "a.jpg", "--output", "out", *flags])
    assert build_run_config(args, workers=1).caption.request.model == model
    provider = dict(zip(flags[::2], flags[1::2], strict=True)).get("--provider", "openai")
    if "--model" not in flags:
        assert CaptionConfig.create(provider=provider).request.model == model
