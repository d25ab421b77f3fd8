"""batches.json: round trip, refusal of bad documents, and the guard against double submission."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_caption.batch import claims, output_state
from beam_caption.batch import ledger as bs
from beam_caption.errors import ConfigError


def _run(run_id: str, state: str = bs.SUBMITTED) -> bs.RunRecord:
    return bs.RunRecord(
        run_id=run_id, created_at="2026-01-01T00:00:00+00:00",
        endpoint={"base_url": "http://127.0.0.1:1/v1", "api_key_env": "OPENAI_API_KEY",
                  "api_key_file": None, "api_key_secret": None},
        info={"model": "gpt-4.1-nano"}, state=state,
        shards=[bs.ShardRecord(index=0, path=f"batch/{run_id}/shard-a-00000.jsonl",
                               meta=f"batch/{run_id}/shard-a-00000.meta.parquet", lines=2,
                               images=3, bytes=100, file_id="file-1", batch_id=None)])


def test_a_missing_ledger_is_empty_and_save_load_round_trips(tmp_path: Path) -> None:
    assert bs.load_ledger(str(tmp_path)).runs == []
    ledger = bs.BatchLedger([_run("r1", bs.COLLECTED), _run("r2")])
    ledger.runs[1].shards[0].counts = {"total": 2, "completed": 1, "failed": 0}
    bs.save_ledger(str(tmp_path), ledger)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batches.json", "batches.json.lock"], \
        "no temporary left"
    loaded = bs.load_ledger(str(tmp_path))
    assert loaded == ledger
    assert [r.run_id for r in loaded.open_runs()] == ["r2"]
    assert loaded.run("r2").unsubmitted() == loaded.run("r2").shards
    loaded.run("r2").shards[0].cancel_requested = True
    assert loaded.run("r2").unsubmitted() == []


def _edited(**changes) -> str:
    run = {**bs.BatchLedger([_run("r1")]).to_json()["runs"][0], **changes}
    return json.dumps({"version": bs.VERSION, "runs": [run]})


@pytest.mark.parametrize("text", ["{not json", json.dumps({"version": 99, "runs": []}),
                                  json.dumps({"version": 1, "runs": [{"run_id": "x"}]}),
                                  _edited(endpoint={}), _edited(info={})])
def test_a_foreign_or_damaged_ledger_is_a_config_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "batches.json").write_text(text)
    with pytest.raises(ConfigError, match=r"batches\.json"):
        bs.load_ledger(str(tmp_path))


def test_an_output_with_open_batches_refuses_another_run(tmp_path: Path) -> None:
    bs.save_ledger(str(tmp_path), bs.BatchLedger([_run("r1")]))
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="batch collect"):
            output_state.check_output(str(tmp_path), overwrite=overwrite)
    assert (tmp_path / "batches.json").exists()


def test_overwrite_drops_the_state_of_collected_runs(tmp_path: Path) -> None:
    bs.save_ledger(str(tmp_path), bs.BatchLedger([_run("r1", bs.COLLECTED)]))
    shard_dir = tmp_path / "batch" / "r1"
    shard_dir.mkdir(parents=True)
    (shard_dir / "shard-a-00000.meta.parquet").write_bytes(b"x")
    output_state.check_output(str(tmp_path), overwrite=False)  # a closed run does not block
    assert (tmp_path / "batches.json").exists()
    output_state.check_output(str(tmp_path), overwrite=True)
    assert not (tmp_path / "batches.json").exists() and not list(shard_dir.iterdir())


def test_a_writer_with_an_older_copy_drops_nothing_another_recorded(tmp_path: Path) -> None:
    out = str(tmp_path)
    first = _run("r1", bs.SUBMITTING)
    first.shards.append(bs.ShardRecord(index=1, path="batch/r1/b.jsonl", meta="batch/r1/b.meta",
                                       lines=2, images=2, bytes=100))
    bs.save_ledger(out, bs.BatchLedger([first]))
    submitter, canceller = bs.load_ledger(out), bs.load_ledger(out)
    # The submitter records a batch; a `batch cancel` with the older copy marks the rest.
    submitter.runs[0].shards[0].batch_id = "batch-1"
    submitter.runs[0].shards[0].status = "validating"
    bs.save_ledger(out, submitter)
    shard = canceller.runs[0].shards[1]
    shard.cancel_requested = True
    bs.save_ledger(out, canceller)
    # Each writer's copy now holds the other's news too (its objects, updated in place).
    assert canceller.runs[0].shards[0].batch_id == "batch-1"
    assert canceller.runs[0].shards[1] is shard
    bs.refresh(out, submitter)
    assert submitter.runs[0].shards[1].cancel_requested
    on_disk = bs.load_ledger(out).runs[0]
    assert (on_disk.shards[0].batch_id, on_disk.shards[0].status) == ("batch-1", "validating")
    assert on_disk.shards[1].cancel_requested and on_disk.unsubmitted() == []
    # A later state wins; a run only the disk knows is kept.
    submitter.runs[0].state = bs.SUBMITTED
    bs.save_ledger(out, submitter)
    bs.save_ledger(out, bs.BatchLedger([_run("r2")]))
    assert [(r.run_id, r.state) for r in bs.load_ledger(out).runs] == [
        ("r2", bs.SUBMITTED), ("r1", bs.SUBMITTED)]


def test_claims_are_kept_released_and_judged_alive(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = str(tmp_path)
    bs.save_ledger(out, bs.BatchLedger([_run("r1", bs.SUBMITTING)]))
    stale = bs.load_ledger(out)
    claimer = bs.load_ledger(out)
    claimer.runs[0].shards[0].claim = claims.own_claim()
    bs.save_ledger(out, claimer)
    bs.save_ledger(out, stale)  # a copy read before the claim does not erase it
    claim = claims.active_claim(bs.load_ledger(out).runs[0].shards[0])
    assert claim is not None and claims.is_own(claim) and claims.claim_alive(claim)
    claimer.runs[0].shards[0].claim = claims.released()
    bs.save_ledger(out, claimer)
    assert claims.active_claim(bs.load_ledger(out).runs[0].shards[0]) is None
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = {**claims.own_claim(), "pid": int(done.stdout), "token": "another"}
    assert not claims.claim_alive(dead) and not claims.is_own(dead)
    far = {**dead, "host": "elsewhere"}
    assert claims.claim_alive(far), "another machine's claim: alive until it is CLAIM_TTL_S old"
    assert not claims.claim_alive({**far, "since": far["since"] - claims.CLAIM_TTL_S - 1})


_SAVER = """
import sys, time
from beam_caption.batch import ledger as bs
folder, index, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ledger = bs.load_ledger(folder)
time.sleep(max(0.0, start - time.time()))
for k in range(40):
    ledger.runs[0].shards[index].batch_id = f"batch-{index}"
    ledger.runs[0].shards[index].counts = {"total": k}
    bs.save_ledger(folder, ledger)
"""


def test_writers_saving_at_the_same_moment_lose_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    run = _run("r1", bs.SUBMITTING)
    run.shards = [bs.ShardRecord(index=i, path=f"p{i}", meta=f"m{i}", lines=1, images=1,
                                 bytes=1) for i in range(4)]
    bs.save_ledger(str(tmp_path), bs.BatchLedger([run]))
    start = time.time() + 1.0
    savers = [subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path), str(i),
                                str(start)]) for i in range(4)]
    assert [p.wait(timeout=120) for p in savers] == [0, 0, 0, 0], "no writer crashed"
    # Each wrote its own shard's batch id from a copy that lacked the others': all are kept.
    shards = bs.load_ledger(str(tmp_path)).runs[0].shards
    assert [s.batch_id for s in shards] == [f"batch-{i}" for i in range(4)]
    assert not list(tmp_path.glob("*.tmp")), "every temporary was renamed"
