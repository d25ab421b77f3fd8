"""Two processes submitting one batch-mode run: a shard another live process is submitting is left
to it; a dead submitter's shard is taken over where the provider can be asked whether its batch
exists (OpenAI), and waits for the user's word where it cannot (Anthropic's inline batches).
Nothing is ever submitted twice. Against the simulator's Batch APIs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from beam_caption.batch import claims
from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, run_cli
from tests.integration.simclient import get

pytestmark = pytest.mark.slow
KEY = "sk-submitters-key"
POLL = ("--poll-interval", "0.05")


def _unsubmitted_run(sim: Any, photos: Path, out: Path, monkeypatch, *flags: str) -> None:
    """A batch-mode run whose shards are written but not submitted (no key where it ran)."""
    monkeypatch.delenv("SUBMITTERS_KEY", raising=False)
    assert run_cli("run", "--input", str(photos / "*"), "--output", str(out), "--mode", "batch",
                   "--batch-max-lines", "2", "--api-key-env", "SUBMITTERS_KEY", *flags,
                   *IN_MEMORY) == 1
    monkeypatch.setenv("SUBMITTERS_KEY", KEY)


def _claim(out: Path, index: int, claim: dict[str, Any]) -> None:
    """Put `claim` on shard `index`, as another submitter would have."""
    ledger = json.loads((out / "batches.json").read_text())
    ledger["runs"][0]["shards"][index]["claim"] = claim
    (out / "batches.json").write_text(json.dumps(ledger))


def _batch_ids(out: Path) -> list[str | None]:
    return [s["batch_id"] for s in json.loads((out / "batches.json").read_text())
            ["runs"][0]["shards"]]


def test_a_live_submitters_shard_is_left_to_it_and_a_dead_ones_is_found(
        tmp_path: Path, monkeypatch, capsys) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    make_small_photos(photos, 6)
    with running_simulator(batch_seconds=0.2, api_key=KEY) as sim:
        _unsubmitted_run(sim, photos, out, monkeypatch, "--base-url", sim.base_url)
        assert _batch_ids(out) == [None, None, None]
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
            _claim(out, 1, {**claims.own_claim(), "pid": other.pid, "token": "another"})
            capsys.readouterr()
            assert run_cli("batch", "submit", str(out)) == 1, "one shard is still in other hands"
            assert "1 being submitted by another process" in capsys.readouterr().out
            ids = _batch_ids(out)
            assert ids[0] and ids[1] is None and ids[2]
            other.kill()
        # Its submitter is gone: the shard is taken over (its file had no batch on the server).
        assert run_cli("batch", "submit", str(out), "--wait", *POLL) == 0
        batches = get(sim.base_url, "/batches?limit=100", KEY).json()["data"]
        stats = sim.stats()
    assert sorted(b["id"] for b in batches) == sorted(_batch_ids(out)) and len(batches) == 3
    assert sorted(Path(r["uri"]).name for r in read_rows(out, "captions")) == sorted(
        p.name for p in photos.iterdir())
    assert set(stats["successes_by_image"].values()) == {1}


def test_an_interrupted_inline_create_waits_for_the_users_word(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    make_small_photos(photos, 4)
    with running_simulator(batch_seconds=0.2, api_key=KEY) as sim:
        _unsubmitted_run(sim, photos, out, monkeypatch, "--provider", "anthropic", "--model",
                         "claude-haiku-4-5", "--base-url", sim.root_url)
        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        # A launcher died while creating shard 0's batch: Anthropic may hold it or not.
        _claim(out, 0, {**claims.own_claim(), "pid": int(done.stdout), "token": "dead"})
        capsys.readouterr()
        assert run_cli("batch", "submit", str(out)) == 1
        said = capsys.readouterr().out
        assert "--resubmit-interrupted" in said and f"beam-caption-{_run_id(out)}-0" in said
        assert _batch_ids(out)[0] is None and _batch_ids(out)[1]
        # The user looked, found none: now it is submitted, once.
        assert run_cli("batch", "submit", str(out), "--resubmit-interrupted", "--wait",
                       *POLL) == 0
        stats = sim.stats()
    assert all(_batch_ids(out))
    assert sorted(Path(r["uri"]).name for r in read_rows(out, "captions")) == sorted(
        p.name for p in photos.iterdir())
    assert set(stats["successes_by_image"].values()) == {1}


def _run_id(out: Path) -> str:
    return json.loads((out / "batches.json").read_text())["runs"][0]["run_id"]


def test_ctrl_c_stops_a_batch_run_at_once_and_collect_finishes_it(tmp_path: Path) -> None:
    import os
    import signal
    import time

    photos, out = tmp_path / "photos", tmp_path / "out"
    make_small_photos(photos, 4)
    with running_simulator(batch_seconds=3.0) as sim:
        env = dict(os.environ, NO_GCE_CHECK="true", OPENAI_API_KEY="sk-local-test")
        launcher = subprocess.Popen(
            [sys.executable, "-m", "beam_caption", "run", "--input", str(photos / "*"),
             "--output", str(out), "--mode", "batch", "--base-url", sim.base_url,
             "--poll-interval", "0.2", *IN_MEMORY], env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                (out / "batches.json").exists() and all(_batch_ids(out))):
            time.sleep(0.05)
        assert all(_batch_ids(out)), "submitted, now waiting for the batch"
        launcher.send_signal(signal.SIGINT)
        _, err = launcher.communicate(timeout=60)
        assert launcher.returncode == 130, err
        assert "Traceback" not in err and f"batch collect {out} --wait" in err
        os.environ["OPENAI_API_KEY"] = "sk-local-test"
        try:
            assert run_cli("batch", "collect", str(out), "--wait", *POLL) == 0
        finally:
            del os.environ["OPENAI_API_KEY"]
        stats = sim.stats()
    assert len(read_rows(out, "captions")) == 4 and set(stats["successes_by_image"].values()) == {1}


def test_collect_leaves_a_cancelled_shard_to_its_live_submitter(tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    make_small_photos(photos, 6)
    with running_simulator(batch_seconds=0.2, api_key=KEY) as sim:
        _unsubmitted_run(sim, photos, out, monkeypatch, "--base-url", sim.base_url)
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
            # Another process is creating shard 0's batch when the user cancels and collects.
            _claim(out, 0, {**claims.own_claim(), "pid": other.pid, "token": "another"})
            assert run_cli("batch", "cancel", str(out)) == 0
            assert run_cli("batch", "collect", str(out)) == 0
            ledger = json.loads((out / "batches.json").read_text())["runs"][0]
            assert ledger["state"] != "collected", "its batch id may be on its way"
            assert [s["collected"] for s in ledger["shards"]] == [False, True, True]
            other.kill()
        # Its submitter died before uploading: no batch can exist, the shard is cancelled.
        assert run_cli("batch", "collect", str(out)) == 0
    ledger = json.loads((out / "batches.json").read_text())["runs"][0]
    assert ledger["state"] == "collected"
    errors = read_rows(out, "errors")
    assert len(errors) == 6 and {e["code"] for e in errors} == {"batch_cancelled"}


def test_a_gemini_batch_made_by_a_killed_launcher_is_found_by_its_name(tmp_path: Path,
                                                                       monkeypatch) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    make_small_photos(photos, 4)
    monkeypatch.setenv("SUBMITTERS_KEY", KEY)
    with running_simulator(batch_seconds=0.2, api_key=KEY) as sim:
        assert run_cli("run", "--input", str(photos / "*"), "--output", str(out), "--mode",
                       "batch", "--no-wait", "--batch-max-lines", "2", "--api-key-env",
                       "SUBMITTERS_KEY", "--provider", "gemini", "--model",
                       "gemini-2.5-flash-lite", "--base-url", sim.root_url, *IN_MEMORY) == 0
        made = _batch_ids(out)
        # What a launcher killed between the create call and its record leaves: the batch is
        # on the server, the ledger has no id for it, only the dead launcher's claim.
        ledger = json.loads((out / "batches.json").read_text())
        shard = ledger["runs"][0]["shards"][0]
        shard.update(batch_id=None, status="written", counts={},
                     claim={**claims.own_claim(), "pid": _dead_pid(), "token": "dead"})
        ledger["runs"][0]["state"] = "submitting"
        (out / "batches.json").write_text(json.dumps(ledger))
        assert run_cli("batch", "submit", str(out), "--wait", *POLL) == 0
        stats = sim.stats()
    assert _batch_ids(out) == made, "the batch it made was found by name, none made again"
    assert sorted(Path(r["uri"]).name for r in read_rows(out, "captions")) == sorted(
        p.name for p in photos.iterdir())
    assert set(stats["successes_by_image"].values()) == {1}


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)
