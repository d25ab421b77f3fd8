"""`run --mode batch` for Anthropic's Message Batches and Gemini's Batch API against the
simulator: rows at batch prices, expiry and cancellation (the answers already made are kept and
billed, the rest become error rows that --resume sends again), and collecting twice."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from beam_caption.cost.pricing import load_prices
from beam_caption.simulator import SimulatorHandle, running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli

pytestmark = pytest.mark.slow
POLL = ("--poll-interval", "0.05")
MODELS = {"anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash-lite"}
PROVIDERS = ["anthropic", "gemini"]


@pytest.fixture(scope="module")
def sim():
    with running_simulator(batch_seconds=0.4, seed=5) as handle:
        yield handle


@pytest.fixture()
def fresh(sim: SimulatorHandle):
    sim.update(batch_seconds=0.4, batch_expire_rate=0.0)
    sim.reset()
    yield sim
    sim.update(batch_seconds=0.4, batch_expire_rate=0.0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_small_photos(folder, 12)
    return folder


def _run(sim: SimulatorHandle, provider: str, photos: Path, out: Path, *extra: str) -> int:
    return run_cli("run", "--input", str(photos / "*"), "--output", str(out), "--provider",
                   provider, "--model", MODELS[provider], "--base-url", sim.root_url,
                   *IN_MEMORY, *extra)


def _ledger(out: Path) -> dict[str, Any]:
    return json.loads((out / "batches.json").read_text())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batch_mode_bills_half_price(fresh, photos, tmp_path, provider: str) -> None:
    sim = fresh
    assert _run(sim, provider, photos, tmp_path, "--mode", "batch", *POLL) == 0
    rows = read_rows(tmp_path, "captions")
    assert len(rows) == 12 and not read_rows(tmp_path, "errors")
    price = load_prices()[MODELS[provider]]
    for row in rows:
        assert row["batch"] is True and row["caption"]
        assert row["prompt_tokens"] == row["estimated_prompt_tokens"]
        assert row["cost_usd"] == pytest.approx(price.cost_usd(
            row["prompt_tokens"], row["completion_tokens"], batch=True))
    stats = sim.stats()
    assert stats["cost_usd"]["realtime"] == 0
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(stats["cost_usd"]["batch"])
    summary = read_summary(tmp_path)
    assert summary["mode"] == "batch" and summary["captions"] == 12
    assert summary["batch"]["saved_usd"] == pytest.approx(summary["cost_usd"])
    run = _ledger(tmp_path)["runs"][0]
    assert run["endpoint"]["provider"] == provider and run["state"] == "collected"
    # Collecting again writes nothing twice.
    assert run_cli("batch", "collect", str(tmp_path)) == 0
    assert len(read_rows(tmp_path, "captions")) == 12


@pytest.mark.parametrize("provider", PROVIDERS)
def test_expired_requests_become_rows_that_resume_sends_again(fresh, photos, tmp_path,
                                                               provider: str) -> None:
    sim = fresh
    sim.update(batch_expire_rate=0.5)
    assert _run(sim, provider, photos, tmp_path, "--mode", "batch", *POLL) == 0
    captions, errors = read_rows(tmp_path, "captions"), read_rows(tmp_path, "errors")
    assert captions and errors and len(captions) + len(errors) == 12
    assert {r["code"] for r in errors} == {"batch_expired"}
    assert all(r["cost_usd"] is None for r in errors)
    billed = sim.stats()
    assert sorted(billed["successes_by_image"].values()) == [1] * len(captions)
    assert sum(r["cost_usd"] for r in captions) == pytest.approx(billed["cost_usd"]["batch"])
    # A realtime --resume sends exactly the expired ones.
    sim.update(batch_expire_rate=0.0)
    sim.reset()
    assert _run(sim, provider, photos, tmp_path, "--resume") == 0
    assert sim.stats()["requests"]["by_outcome"]["ok"] == len(errors)
    assert len(read_rows(tmp_path, "captions")) == 12
    assert not read_rows(tmp_path, "errors")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_keeps_what_was_answered(fresh, photos, tmp_path, provider: str) -> None:
    sim = fresh
    sim.update(batch_seconds=3.0)
    assert _run(sim, provider, photos, tmp_path, "--mode", "batch", "--no-wait") == 0
    time.sleep(1.4)  # about a third of the requests are done
    assert run_cli("batch", "cancel", str(tmp_path)) == 0
    assert run_cli("batch", "collect", str(tmp_path), "--wait", *POLL) == 0
    captions, errors = read_rows(tmp_path, "captions"), read_rows(tmp_path, "errors")
    assert captions and errors and len(captions) + len(errors) == 12
    assert {r["code"] for r in errors} == {"batch_cancelled"}
    billed = sim.stats()
    assert sorted(billed["successes_by_image"].values()) == [1] * len(captions)
    assert sum(r["cost_usd"] for r in captions) == pytest.approx(billed["cost_usd"]["batch"])
    assert _ledger(tmp_path)["runs"][0]["shards"][0]["status"] == "cancelled"


def test_shards_respect_each_providers_limits(fresh, photos, tmp_path) -> None:
    """Lines above the flag's limit are split into several batches, each collected."""
    sim = fresh
    assert _run(sim, "gemini", photos, tmp_path, "--mode", "batch", "--batch-max-lines", "5",
                *POLL) == 0
    shards = _ledger(tmp_path)["runs"][0]["shards"]
    assert len(shards) >= 3 and all(s["lines"] <= 5 for s in shards)
    assert all(s["batch_id"].startswith("batches/") for s in shards)
    assert len(read_rows(tmp_path, "captions")) == 12
