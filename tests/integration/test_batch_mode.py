"""`run --mode batch` and `beam-caption batch ...` end to end against the simulator's Batch API."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from beam_caption.cost.pricing import load_prices
from beam_caption.layout import JOURNAL_DIR, run_journal_dir
from beam_caption.pipeline import journal as jr
from beam_caption.simulator import SimulatorHandle, running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli
from tests.integration.simclient import get

pytestmark = pytest.mark.slow
POLL = ("--poll-interval", "0.05")
MODEL = "gpt-4.1-nano"


def _run(sim: SimulatorHandle, photos: Path, out: Path, *extra: str) -> int:
    return run_cli("run", "--input", str(photos / "*"), "--output", str(out), "--model", MODEL,
                   "--base-url", sim.base_url, *IN_MEMORY, *extra)


def _batch(action: str, out: Path, *extra: str) -> int:
    return run_cli("batch", action, str(out), *extra)


def _ledger(out: Path) -> dict[str, Any]:
    return json.loads((out / "batches.json").read_text())


def _sim_batches(sim: SimulatorHandle, key: str = "test-key") -> list[str]:
    return [b["id"] for b in get(sim.base_url, "/batches?limit=100", key).json()["data"]]


def _photos(tmp_path: Path, count: int) -> Path:
    photos = tmp_path / "photos"
    make_small_photos(photos, count)
    return photos


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(Path(r["uri"]).name for r in rows)


def test_batch_run_end_to_end_at_half_price_split_by_count(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 10)
    shutil.copy(photos / "photo00003.jpg", photos / "copy-of-3.jpg")  # same bytes: sent once
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "out"
    with running_simulator(batch_seconds=0.3) as sim:
        assert _run(sim, photos, out, "--mode", "batch", "--batch-max-lines", "4", *POLL) == 0
        stats = sim.stats()
        files_before = sorted(p.name for p in out.iterdir())
        assert _batch("collect", out) == 0  # collecting again writes nothing new
        assert sorted(p.name for p in out.iterdir()) == files_before
        assert sim.stats() == stats

    captions = read_rows(out, "captions")
    valid = sorted(p.name for p in photos.iterdir() if p.name != "broken.jpg")
    assert _names(captions) == valid, "every valid image exactly once"
    assert [(Path(e["uri"]).name, e["code"]) for e in read_rows(out, "errors")] == [
        ("broken.jpg", "decode_error")]
    # 10 distinct requests in files of at most 4 lines; the copy shares its original's line.
    shards = _ledger(out)["runs"][0]["shards"]
    assert sorted(s["lines"] for s in shards) == [2, 4, 4]
    assert stats["batch_lines"] == {"ok": 10, "failed": 0}
    assert set(stats["successes_by_image"].values()) == {1}
    assert stats["requests"]["total"] == 0, "nothing went through the realtime endpoint"

    price = load_prices()[MODEL]
    for row in captions:
        assert row["batch"] is True
        full = price.cost_usd(row["prompt_tokens"], row["completion_tokens"])
        assert row["cost_usd"] == pytest.approx(full / 2)  # copies keep the real cost too
    assert [r["deduplicated"] for r in captions].count(True) == 1
    summary = read_summary(out)
    cost = sum(r["cost_usd"] for r in captions if not r["deduplicated"])
    assert summary["cost_usd"] == pytest.approx(cost) == pytest.approx(stats["cost_usd"]["batch"])
    assert summary["batch"]["cost_usd_at_realtime_prices"] == pytest.approx(2 * cost)
    assert (summary["images"], summary["captions"], summary["errors"]) == (12, 11, 1)
    assert summary["mode"] == "batch" and summary["batch"]["batches"] == 3
    assert not list(out.glob("batch/*/*.jsonl")), "spent request files are deleted"


def test_killed_launcher_resumes_with_collect_and_submits_nothing_new(tmp_path: Path,
                                                                       capsys) -> None:
    photos = _photos(tmp_path, 9)
    out = tmp_path / "out"
    max_bytes = 10_000  # these requests are 2-3 kB each: three or four to a file
    with running_simulator(batch_seconds=0.5) as sim:
        assert _run(sim, photos, out, "--mode", "batch", "--no-wait",
                    "--batch-max-bytes", str(max_bytes)) == 0
        # The launcher is gone; its batches are recorded, and still running.
        run = _ledger(out)["runs"][0]
        shard_files = [out / s["path"] for s in run["shards"]]
        sizes = [f.stat().st_size for f in shard_files]
        assert len(shard_files) >= 3 and all(size <= max_bytes for size in sizes)
        assert sum(s["lines"] for s in run["shards"]) == 9
        # A file was closed only when the next line would not fit: shard-<writer>-<n> names
        # sort in writing order.
        for full, following in itertools.pairwise(sorted(shard_files)):
            if full.name.rsplit("-", 1)[0] == following.name.rsplit("-", 1)[0]:
                next_line = following.read_bytes().splitlines(keepends=True)[0]
                assert full.stat().st_size + len(next_line) > max_bytes
        batches = _sim_batches(sim)
        assert sorted(batches) == sorted(s["batch_id"] for s in run["shards"])
        assert run["state"] == "submitted" and not read_rows(out, "captions")
        assert _run(sim, photos, out, "--resume") == 2, "a run over open batches is refused"

        capsys.readouterr()
        assert _batch("status", out) == 0
        status = capsys.readouterr().out
        assert all(b in status for b in batches)
        assert _batch("collect", out, "--wait", *POLL) == 0
        assert _batch("submit", out) == 0
        assert _sim_batches(sim) == batches, "no batch was created twice"
        stats = sim.stats()
    assert _names(read_rows(out, "captions")) == sorted(p.name for p in photos.iterdir())
    assert set(stats["successes_by_image"].values()) == {1}
    assert len(stats["successes_by_image"]) == 9
    assert _ledger(out)["runs"][0]["state"] == "collected"


def test_a_batch_resume_writes_what_a_killed_realtime_run_paid_for(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 8)
    done, out = tmp_path / "done", tmp_path / "out"
    with running_simulator(batch_seconds=0.2) as sim:
        # What a realtime run killed after three answers leaves: their rows in its journal,
        # no Parquet (the rows of a real run over three of the photos, journaled as it would).
        three = tmp_path / "three"
        three.mkdir()
        for photo in sorted(photos.iterdir())[:3]:
            shutil.copy(photo, three / photo.name)
        assert _run(sim, three, done) == 0
        paid = read_rows(done, "captions")
        journal = jr.AnswerJournal(run_journal_dir(str(out), "20261130T000000Z-killed"))
        for row in paid:
            journal.append(jr.CAPTIONS, {**row, "run_id": "20261130T000000Z-killed",
                                         "uri": str(photos / Path(row["uri"]).name)})
        journal.close()
        before = sim.stats()
        assert _run(sim, photos, out, "--mode", "batch", "--resume", *POLL) == 0
        stats = sim.stats()
    # The three paid answers were not sent again, and each of them has its row.
    assert stats["requests"]["total"] == before["requests"]["total"]
    assert sum(stats["batch_lines"].values()) - sum(before["batch_lines"].values()) == 5
    rows = read_rows(out, "captions")
    assert _names(rows) == sorted(p.name for p in photos.iterdir())
    assert sum(1 for r in rows if not r["batch"]) == 3
    summary = read_summary(out)
    assert (summary["captions"], summary["carried_over"]) == (8, 3)
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    carried_usd = sum(r["cost_usd"] for r in paid)
    assert summary["batch"]["cost_usd_at_realtime_prices"] == pytest.approx(
        (summary["cost_usd"] - carried_usd) * 2 + carried_usd)
    assert not (out / JOURNAL_DIR).exists(), "their journal went once the rows were written"


def test_incremental_refuses_an_output_whose_batches_are_not_collected(tmp_path: Path,
                                                                      capsys) -> None:
    photos = _photos(tmp_path, 3)
    first, second = tmp_path / "first", tmp_path / "second"
    with running_simulator(batch_seconds=0.2) as sim:
        assert _run(sim, photos, first) == 0  # captions, then three more photos in a batch
        make_small_photos(photos, 6)
        assert _run(sim, photos, first, "--resume", "--mode", "batch", "--no-wait") == 0
        capsys.readouterr()
        assert _run(sim, photos, second, "--incremental", str(first)) == 2
        assert "batch collect" in capsys.readouterr().err
        assert _batch("collect", first, "--wait", *POLL) == 0
        assert _run(sim, photos, second, "--incremental", str(first)) == 0
        stats = sim.stats()
    assert set(stats["successes_by_image"].values()) == {1}, "no photo was paid twice"
    assert len(stats["successes_by_image"]) == 6


def test_a_batch_runs_summary_counts_the_skipped_files(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 2)
    (photos / "photo00000.AAE").write_bytes(b"<plist/>")
    out = tmp_path / "out"
    with running_simulator(batch_seconds=0.2) as sim:
        # The folder and a glob of its photos: each photo is listed twice.
        assert run_cli("run", "--input", str(photos), "--input", str(photos / "*.jpg"),
                       "--output", str(out), "--model", MODEL, "--base-url", sim.base_url,
                       "--mode", "batch", *POLL, *IN_MEMORY) == 0
    summary = read_summary(out)
    assert summary["skipped"] == {"aae_sidecar": 1, "listed_again": 2}
    assert summary["captions"] == 2


def test_expired_lines_become_error_rows_that_a_realtime_resume_finishes(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 12)
    out = tmp_path / "out"
    with running_simulator(batch_seconds=0.3, batch_expire_rate=0.4, seed=3) as sim:
        assert _run(sim, photos, out, "--mode", "batch", *POLL) == 0
        expired = read_rows(out, "errors")
        assert expired and {e["code"] for e in expired} == {"batch_expired"}
        assert len(read_rows(out, "captions")) + len(expired) == 12
        assert read_summary(out)["errors_by_code"] == {"batch_expired": len(expired)}
        assert {s["status"] for s in _ledger(out)["runs"][0]["shards"]} == {"expired"}

        assert _run(sim, photos, out, "--resume") == 0  # realtime
        stats = sim.stats()
    captions = read_rows(out, "captions")
    assert _names(captions) == sorted(p.name for p in photos.iterdir())
    assert read_rows(out, "errors") == [], "the expired rows were replaced"
    assert Counter(r["batch"] for r in captions) == {True: 12 - len(expired),
                                                     False: len(expired)}
    assert stats["requests"]["by_outcome"]["ok"] == len(expired)
    assert set(stats["successes_by_image"].values()) == {1}


def test_cancel_keeps_paid_answers_and_the_rest_become_error_rows(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 6)
    out = tmp_path / "out"
    with running_simulator(batch_seconds=3.0) as sim:
        assert _run(sim, photos, out, "--mode", "batch", "--no-wait",
                    "--batch-max-lines", "3") == 0
        first = _ledger(out)["runs"][0]["shards"][0]["batch_id"]
        deadline = time.monotonic() + 5
        while get(sim.base_url, f"/batches/{first}").json()["request_counts"]["completed"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert _batch("cancel", out) == 0
        assert _batch("collect", out, "--wait", *POLL) == 0
        stats = sim.stats()
    captions, errors = read_rows(out, "captions"), read_rows(out, "errors")
    assert _names(captions + errors) == sorted(p.name for p in photos.iterdir())
    assert captions and errors and {e["code"] for e in errors} == {"batch_cancelled"}
    assert len(captions) == stats["batch_lines"]["ok"], "a row for every answer paid for"
    assert {s["status"] for s in _ledger(out)["runs"][0]["shards"]} == {"cancelled"}


def test_a_failed_submission_is_finished_by_batch_submit(tmp_path: Path, monkeypatch,
                                                          capfd, caplog) -> None:
    photos = _photos(tmp_path, 4)
    out = tmp_path / "out"
    monkeypatch.delenv("BATCH_TEST_KEY", raising=False)
    with running_simulator(batch_seconds=0.2, api_key="sk-batch-test-key") as sim:
        # No key on this machine: the shard files are written, their upload is refused.
        assert _run(sim, photos, out, "--mode", "batch", "--api-key-env", "BATCH_TEST_KEY") == 1
        err = capfd.readouterr().err
        assert "batch submit" in err and "sk-batch-test-key" not in err
        assert "Traceback" not in err and not [
            r for r in caplog.records if r.name == "apache_beam.runners.common"
            and r.levelno >= logging.ERROR], "the refusal is one line, not Beam's traceback"
        run = _ledger(out)["runs"][0]
        assert run["state"] == "submitting" and run["shards"][0]["batch_id"] is None
        monkeypatch.setenv("BATCH_TEST_KEY", "sk-batch-test-key")
        assert _batch("submit", out, "--wait", *POLL) == 0
        assert len(_sim_batches(sim, "sk-batch-test-key")) == 1
    assert _names(read_rows(out, "captions")) == sorted(p.name for p in photos.iterdir())


def test_batch_commands_need_a_batch_output(tmp_path: Path, capsys) -> None:
    assert _batch("status", tmp_path) == 2
    assert "batches.json" in capsys.readouterr().err
