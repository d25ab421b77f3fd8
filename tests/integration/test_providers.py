"""Realtime runs for each provider (OpenAI chat completions, Anthropic Messages, Gemini
generateContent) through the real pipeline against the simulator speaking that wire format:
captions, tokens, cost and the error codes, with the providers' own failures (529 overloaded,
429 RESOURCE_EXHAUSTED with RetryInfo) retried and their terminal ones (no credit, a bad key,
a refusal) ending as error rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from beam_caption.cost import tokens
from beam_caption.cost.pricing import load_prices
from beam_caption.simulator import SimulatorHandle, running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli

pytestmark = pytest.mark.slow

SECRET = "sk-prov-" + "s3cr3t" * 6
KEY_ENV = "BC_PROVIDER_TEST_KEY"
MODELS = {"openai": "gpt-5.4-nano", "anthropic": "claude-haiku-4-5",
          "gemini": "gemini-2.5-flash-lite"}
FAULTS = ("429", "500", "503", "timeout", "disconnect", "broken_json", "quota", "content_filter")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Small photos and two 1600x1200 ones (sent whole: Anthropic's downscale, Gemini's tiles)."""
    root = tmp_path_factory.mktemp("photos")
    make_small_photos(root / "small", 5)
    make_small_photos(root / "large", 2, size=(1600, 1200), seed=3)
    return [root / "small", root / "large"]


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "requests.jsonl"


@pytest.fixture(scope="module")
def sim(sim_log: Path):
    with running_simulator(api_key=SECRET, log_path=str(sim_log), seed=11) as handle:
        yield handle


@pytest.fixture()
def clean(sim: SimulatorHandle):
    """No faults, a zeroed ledger; the faults are switched off again afterwards."""
    sim.update(**{f"rate_{name}": 0.0 for name in FAULTS})
    sim.reset()
    yield sim
    sim.update(**{f"rate_{name}": 0.0 for name in FAULTS})


def base_url(sim: SimulatorHandle, provider: str) -> str:
    """Each provider's base URL as its SDK spells it: OpenAI's ends in /v1, the others not."""
    return sim.base_url if provider == "openai" else sim.root_url


def run(sim: SimulatorHandle, provider: str, photos: list[Path], out: Path, *extra: str,
        key: str = SECRET) -> int:
    os.environ[KEY_ENV] = key
    try:
        return run_cli("run", *(a for p in photos for a in ("--input", str(p / "*.jpg"))),
                       "--output", str(out), "--provider", provider,
                       "--model", MODELS[provider], "--base-url", base_url(sim, provider),
                       "--api-key-env", KEY_ENV, "--max-side", "0", "--max-attempts", "8",
                       "--overwrite", *IN_MEMORY, *extra)
    finally:
        del os.environ[KEY_ENV]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_each_provider_captions_every_image_at_its_price(clean, photos, tmp_path,
                                                         provider: str) -> None:
    sim = clean
    assert run(sim, provider, photos, tmp_path) == 0
    rows = read_rows(tmp_path, "captions")
    stats = sim.stats()
    assert len(rows) == 7 and not read_rows(tmp_path, "errors")
    price = load_prices()[MODELS[provider]]
    for row in rows:
        assert row["caption"] and row["finish_reason"] == "stop" and row["request_id"]
        # The simulator counts with the same rules as the estimate: they agree exactly.
        assert row["prompt_tokens"] == row["estimated_prompt_tokens"]
        assert row["cost_usd"] == pytest.approx(price.cost_usd(row["prompt_tokens"],
                                                               row["completion_tokens"]))
    large = [r for r in rows if r["width"] == 1600]
    assert len(large) == 2
    text = rows[0]["prompt_tokens"] - tokens.image_tokens(price.image_tokens, 96, 64)
    image = large[0]["prompt_tokens"] - text
    expected = {"openai": tokens.image_tokens(price.image_tokens, 1600, 1200),
                "anthropic": 1532,  # 1600x1200 -> 1238x928 (1.15 MP), / 750
                "gemini": 6 * 258}  # 3 x 2 tiles of 768 px
    assert image == expected[provider]
    assert sum(r["prompt_tokens"] for r in rows) == stats["tokens"]["realtime"]["prompt"]
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(stats["cost_usd"]["realtime"])
    summary = read_summary(tmp_path)
    assert summary["cost_usd"] == pytest.approx(stats["cost_usd"]["realtime"])
    assert summary["provider"] == provider


def test_the_provider_is_part_of_the_request_key(clean, photos, tmp_path) -> None:
    keys = {}
    for provider in ("openai", "anthropic"):
        out = tmp_path / provider
        assert run(clean, provider, photos[:1], out, "--model", "claude-haiku-4-5",
                   "--price-as", "claude-haiku-4-5") == 0
        keys[provider] = {r["uri"]: r["request_key"] for r in read_rows(out, "captions")}
    assert keys["openai"].keys() == keys["anthropic"].keys()
    assert not set(keys["openai"].values()) & set(keys["anthropic"].values())


@pytest.mark.parametrize(("provider", "faults", "statuses"), [
    ("anthropic", {"rate_503": 0.3, "rate_429": 0.2}, {529, 429}),
    ("gemini", {"rate_429": 0.35, "rate_500": 0.15}, {429, 500}),
])
def test_overloaded_and_resource_exhausted_are_retried(clean, photos, tmp_path, sim_log,
                                                       provider: str, faults: dict,
                                                       statuses: set[int]) -> None:
    sim = clean
    sim.update(**faults)
    before = _log_lines(sim_log)
    assert run(sim, provider, photos, tmp_path) == 0
    rows = read_rows(tmp_path, "captions")
    assert len(rows) == 7 and not read_rows(tmp_path, "errors")
    assert any(r["attempts"] > 1 for r in rows)
    seen = {r["status"] for r in _log_lines(sim_log)[len(before):]}
    assert statuses <= seen
    # Only the answers were billed, once each.
    assert sorted(sim.stats()["successes_by_image"].values()) == [1] * 7
    summary = read_summary(tmp_path)
    assert summary["engine"]["retries"] >= 1


def test_gemini_429_waits_for_its_retry_delay(clean, tmp_path, sim_log) -> None:
    """RESOURCE_EXHAUSTED carries RetryInfo; the simulator's RPM window enforces it."""
    sim = clean
    sim.update(rpm=2, window_seconds=1.0)
    before = len(_log_lines(sim_log))
    try:
        photos = [tmp_path / "p"]
        make_small_photos(photos[0], 4)
        assert run(sim, "gemini", photos, tmp_path / "out", "--concurrency", "4") == 0
    finally:
        sim.update(rpm=0, window_seconds=60.0)
    rows = read_rows(tmp_path / "out", "captions")
    assert len(rows) == 4
    errors = [r for r in _log_lines(sim_log)[before:] if r["status"] == 429]
    assert errors and all(r["path"].endswith(":generateContent") for r in errors)


@pytest.mark.parametrize(("provider", "fault", "code", "billed"), [
    ("anthropic", "content_filter", "refusal", True),
    ("gemini", "content_filter", "content_filter", True),
    ("anthropic", "quota", "insufficient_quota", False),
    ("gemini", "quota", "insufficient_quota", False),
])
def test_terminal_answers_become_error_rows(clean, photos, tmp_path, provider: str, fault: str,
                                            code: str, billed: bool) -> None:
    sim = clean
    sim.update(**{f"rate_{fault}": 1.0})
    exit_code = run(sim, provider, photos[:1], tmp_path)
    errors = read_rows(tmp_path, "errors")
    assert not read_rows(tmp_path, "captions")
    assert errors and {r["code"] for r in errors} == {code}
    if billed:
        assert exit_code == 0 and all(r["cost_usd"] and r["cost_usd"] > 0 for r in errors)
    else:
        # No credit stops the run (exit 1); nothing was billed.
        assert exit_code == 1 and sim.stats()["cost_usd"]["realtime"] == 0
        assert all(r["cost_usd"] is None for r in errors)


@pytest.mark.parametrize(("provider", "code"), [("anthropic", "http_401"),
                                                ("gemini", "http_400")])
def test_a_wrong_key_stops_the_run_and_is_never_written(clean, photos, tmp_path,
                                                        provider: str, code: str) -> None:
    wrong = "sk-wrong-" + "x1" * 12
    assert run(clean, provider, photos[:1], tmp_path, key=wrong) == 1
    errors = read_rows(tmp_path, "errors")
    assert errors and {r["code"] for r in errors} == {code}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert wrong.encode() not in data and SECRET.encode() not in data


def _log_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("provider", "cap"), [("anthropic", 0.0009), ("gemini", 0.0002)])
def test_the_spend_cap_binds_at_each_providers_price(clean, photos, tmp_path, provider: str,
                                                     cap: float) -> None:
    """A cap that fits a few photos: the bill never passes it, the rest are not sent."""
    sim = clean
    code = run(sim, provider, photos, tmp_path, "--max-cost-usd", str(cap), "--concurrency", "2")
    captions, errors = read_rows(tmp_path, "captions"), read_rows(tmp_path, "errors")
    billed = sim.stats()["cost_usd"]["realtime"]
    assert code == 1 and errors and len(captions) + len(errors) == 7
    assert {r["code"] for r in errors} == {"budget_exceeded"}
    assert 0 < billed <= cap
    assert sum(r["cost_usd"] for r in captions) == pytest.approx(billed)
