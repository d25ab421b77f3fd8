"""The request engine against a misbehaving simulator: nothing lost, nothing billed twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_small_photos(folder, 120)
    return folder


def test_faults_end_with_exactly_one_answer_per_image(photos: Path, tmp_path: Path) -> None:
    faults = dict(rate_429=0.10, rate_500=0.05, rate_timeout=0.01, rate_disconnect=0.01,
                  rate_broken_json=0.01, hang_seconds=30, seed=3, latency_ms=5)
    with running_simulator(**faults) as sim:
        out = tmp_path / "out"
        code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--request-timeout", "1.5",
                       "--max-attempts", "10", *IN_MEMORY)
        stats = sim.stats()
    assert code == 0
    rows = read_rows(out, "captions")
    assert read_rows(out, "errors") == []
    assert sorted(Path(r["uri"]).name for r in rows) == sorted(p.name for p in photos.iterdir())
    # Each image was answered (billed) exactly once although many requests failed on the way.
    assert len(stats["successes_by_image"]) == len(rows)
    assert set(stats["successes_by_image"].values()) == {1}
    outcomes = stats["requests"]["by_outcome"]
    for fault in ("rate_limited", "server_error", "broken_json"):
        assert outcomes.get(fault, 0) > 0, f"the simulator injected no {fault}"
    retried = [r for r in rows if r["attempts"] > 1]
    assert retried, "some rows needed retries"
    summary = read_summary(out)
    assert summary["engine"]["retries"] == sum(r["attempts"] - 1 for r in rows)
    assert summary["engine"]["rate_limited_429"] == outcomes["rate_limited"]


def test_rpm_limit_is_respected_with_few_429s(photos: Path, tmp_path: Path) -> None:
    # 100 requests per 10 s sliding window = 600 per minute, as the account's --rpm says.
    with running_simulator(rpm=100, window_seconds=10) as sim:
        out = tmp_path / "out"
        code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--rpm", "600", "--concurrency", "64",
                       *IN_MEMORY)
        stats = sim.stats()
    assert code == 0
    assert len(read_rows(out, "captions")) == 120
    total = stats["requests"]["total"]
    limited = stats["requests"]["by_outcome"].get("rate_limited", 0)
    assert limited < 0.02 * total, f"{limited} 429s in {total} requests"
    summary = read_summary(out)
    assert summary["engine"]["throttled_ms"] > 0, "the engine paced itself"


def test_a_revoked_key_stops_the_run_early_with_one_clear_message(photos, tmp_path, capsys,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("BC_REVOKED_KEY", "sk-revoked-key-0000000000")
    with running_simulator(api_key="sk-the-real-key-1111111111") as sim:
        out = tmp_path / "out"
        code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--api-key-env", "BC_REVOKED_KEY",
                       "--concurrency", "4", *IN_MEMORY)
        stats = sim.stats()
    assert code == 1
    printed = capsys.readouterr().out
    stop_lines = [line for line in printed.splitlines() if "stopped early" in line]
    assert len(stop_lines) == 1
    assert "http_401" in stop_lines[0] and "API key" in stop_lines[0]
    assert "sk-revoked" not in printed
    # It stopped after a handful of refusals instead of sending all 120.
    assert stats["requests"]["total"] <= 3 + 4
    errors = read_rows(out, "errors")
    assert len(errors) == 120 and {e["code"] for e in errors} == {"http_401"}
    assert read_rows(out, "captions") == []


def test_spend_cap_stops_early_with_budget_rows_and_stays_under_cap(photos, tmp_path,
                                                                      capsys) -> None:
    cap = 0.001
    with running_simulator(latency_ms=20) as sim:
        out = tmp_path / "out"
        code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--max-cost-usd", str(cap), *IN_MEMORY)
        stats = sim.stats()
    assert code == 1
    assert "spend cap" in capsys.readouterr().out
    captions, errors = read_rows(out, "captions"), read_rows(out, "errors")
    assert captions, "some images were captioned before the cap"
    assert len(captions) + len(errors) == 120
    assert {e["code"] for e in errors} == {"budget_exceeded"}
    assert {e["stage"] for e in errors} == {"budget"}
    billed = stats["cost_usd"]["realtime"]
    assert billed <= cap
    assert billed == pytest.approx(sum(r["cost_usd"] for r in captions))
    summary = read_summary(out)
    assert summary["budget_exceeded"] == len(errors) and summary["max_cost_usd"] == cap
