"""batches.json: round trip, refusal of bad documents, and the guard against double submission."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batches.json"], "no temporary left"
    loaded = bs.load_ledger(str(tmp_path))
    assert loaded == ledger
    assert [r.run_id for r in loaded.open_runs()] == ["r2"]
    assert loaded.run("r2").unsubmitted() == loaded.run("r2").shards
    loaded.run("r2").shards[0].cancel_requested = True
    assert loaded.run("r2").unsubmitted() == []


@pytest.mark.parametrize("text", ["{not json", json.dumps({"version": 99, "runs": []}),
                                  json.dumps({"version": 1, "runs": [{"run_id": "x"}]})])
def test_a_foreign_or_damaged_ledger_is_a_config_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "batches.json").write_text(text)
    with pytest.raises(ConfigError, match=r"batches\.json"):
        bs.load_ledger(str(tmp_path))


def test_an_output_with_open_batches_refuses_another_run(tmp_path: Path) -> None:
    bs.save_ledger(str(tmp_path), bs.BatchLedger([_run("r1")]))
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="batch collect"):
            bs.check_output(str(tmp_path), overwrite=overwrite)
    assert (tmp_path / "batches.json").exists()


def test_overwrite_drops_the_state_of_collected_runs(tmp_path: Path) -> None:
    bs.save_ledger(str(tmp_path), bs.BatchLedger([_run("r1", bs.COLLECTED)]))
    shard_dir = tmp_path / "batch" / "r1"
    shard_dir.mkdir(parents=True)
    (shard_dir / "shard-a-00000.meta.parquet").write_bytes(b"x")
    bs.check_output(str(tmp_path), overwrite=False)  # a closed run does not block
    assert (tmp_path / "batches.json").exists()
    bs.check_output(str(tmp_path), overwrite=True)
    assert not (tmp_path / "batches.json").exists() and not list(shard_dir.iterdir())
