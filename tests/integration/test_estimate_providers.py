"""`beam-caption estimate` across providers: the token rules of Anthropic and Gemini pinned by
hand, each provider's estimate within 2% of the simulator's bill for it, and the table of the
cheapest model of each provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from beam_caption.cost.pricing import format_usd, load_prices
from beam_caption.simulator import running_simulator
from tests.integration.pipeline_helpers import IN_MEMORY, run_cli

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SIZES = {"square.jpg": (1024, 1024), "portrait.jpg": (1800, 2400), "tall.jpg": (2048, 4096)}
MODELS = {"openai": "gpt-5.4-nano", "anthropic": "claude-haiku-4-5",
          "gemini": "gemini-2.5-flash-lite"}


def estimate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert run_cli("estimate", "--json", *args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sized")
    for i, (name, size) in enumerate(SIZES.items()):
        Image.new("RGB", size, (40 + 60 * i, 120, 200 - 50 * i)).save(folder / name, quality=85)
    return folder


def _base(sim: Any, provider: str) -> str:
    return sim.base_url if provider == "openai" else sim.root_url


# Sent at their own size (--max-side 0); text 15 tokens per request (see test_estimate.py).
PINNED = [
    # Anthropic: downscale to long side <= 1568 px and <= 1.15 MP, then w x h / 750:
    #   1024x1024: no downscale, 1,048,576 / 750 = 1,398.1 -> 1,399 + 15 = 1,414
    #   1800x2400: x0.5160 (the area binds) -> 928x1238 = 1,148,864 / 750 -> 1,532 + 15 = 1,547
    #   2048x4096: x0.3703 -> 758x1516 = 1,149,128 / 750 -> 1,533 + 15 = 1,548
    pytest.param("anthropic", 1414 + 1547 + 1548, id="anthropic-area"),
    # Gemini: 258 per 768 px tile (both sides <= 384 px: one tile):
    #   1024x1024: 2 x 2 = 4 tiles = 1,032 + 15 = 1,047
    #   1800x2400: 3 x 4 = 12 tiles = 3,096 + 15 = 3,111
    #   2048x4096: 3 x 6 = 18 tiles = 4,644 + 15 = 4,659
    pytest.param("gemini", 1047 + 3111 + 4659, id="gemini-tiles"),
]


@pytest.mark.parametrize(("provider", "input_tokens"), PINNED)
def test_estimate_and_bill_follow_each_providers_rule(sized, tmp_path, capsys, provider: str,
                                                      input_tokens: int) -> None:
    flags = ["--input", str(sized / "*.jpg"), "--provider", provider, "--model",
             MODELS[provider], "--max-side", "0"]
    report = estimate(capsys, *flags)
    with running_simulator() as sim:
        assert run_cli("run", *flags, "--output", str(tmp_path / "out"), "--base-url",
                       _base(sim, provider), *IN_MEMORY) == 0
        billed = sim.stats()["tokens"]["realtime"]["prompt"]
    assert report["chosen"]["input_tokens"] == billed == input_tokens
    price = load_prices()[MODELS[provider]]
    assert report["chosen"]["input_usd"] == pytest.approx(price.cost_usd(input_tokens, 0))


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_each_providers_estimate_is_within_two_percent_of_its_bill(tmp_path, capsys,
                                                                    provider: str) -> None:
    """The documented workflow, per provider: a trial run, then the estimate for all."""
    photos = str(SAMPLES / "*.jpg")
    common = ["--provider", provider, "--model", MODELS[provider]]
    with running_simulator() as sim:
        base = _base(sim, provider)
        assert run_cli("run", "--input", photos, *common, "--output", str(tmp_path / "trial"),
                       "--base-url", base, "--max-side", "768", *IN_MEMORY) == 0
        report = estimate(capsys, "--input", photos, *common, "--output-tokens-from",
                          str(tmp_path / "trial"))
        sim.reset()
        assert run_cli("run", "--input", photos, *common, "--output", str(tmp_path / "all"),
                       "--base-url", base, *IN_MEMORY) == 0
        total = sim.stats()["cost_usd"]["realtime"]
    estimated = report["chosen"]["realtime_usd"]
    print(f"\n{provider}: estimate {format_usd(estimated)} vs billed {format_usd(total)} "
          f"({estimated / total - 1:+.2%})")
    assert total > 0 and estimated == pytest.approx(total, rel=0.02)


def test_estimate_shows_the_cheapest_model_of_each_provider(sized, capsys) -> None:
    report = estimate(capsys, "--input", str(sized / "*.jpg"))
    cheapest = report["by_provider"]
    assert [line["provider"] for line in cheapest].count("anthropic") == 1
    assert {line["provider"] for line in cheapest} == {"openai", "anthropic", "gemini"}
    costs = [line["realtime_usd"] for line in cheapest]
    assert costs == sorted(costs)
    capsys.readouterr()
    assert run_cli("estimate", "--input", str(sized / "*.jpg")) == 0
    text = capsys.readouterr().out
    assert "cheapest of each provider" in text
    for line in cheapest:
        assert f"{line['provider']}: {line['model']}" in text
