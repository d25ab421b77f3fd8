"""Interrupted runs, as a user interrupts them: Ctrl-C, a second Ctrl-C, SIGTERM, kill -9 of the
whole process group, a worker process killed. Then --resume, and the simulator's ledger says what
was paid twice: at most the requests that were in flight, and every image has exactly one row.

The launcher runs as a real subprocess in its own process group (as a terminal runs it), with two
local worker processes, against a simulator in another process that answers in about 400 ms. The
interrupt comes at a random point past 30% of the answers (the seed is in the test's output).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from beam_caption.simulator import running_simulator_process
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import read_rows, read_summary

pytestmark = pytest.mark.slow

IMAGES = 400
CONCURRENCY = 16
WORKERS = 2
WINDOW = CONCURRENCY * WORKERS  # the most requests that can be in flight at once
BEAM_CAPTION = [sys.executable, "-m", "beam_caption"]
WORKER_PROCESSES = (f"--direct_num_workers={WORKERS}",)
# What a small local job runs as: the engine and the DoFns in the launcher's own process.
IN_PROCESS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos400")
    make_small_photos(folder, IMAGES, size=(640, 480))
    return folder


@pytest.fixture()
def sim() -> Iterator[object]:
    with running_simulator_process(latency_ms=400, latency_sigma=0.3) as handle:
        yield handle


def _command(photos: Path, out: Path, sim, *extra: str,
             mode: tuple[str, ...] = WORKER_PROCESSES) -> list[str]:
    return [*BEAM_CAPTION, "run", "--input", str(photos / "*.jpg"), "--output", str(out),
            "--base-url", sim.base_url, "--concurrency", str(CONCURRENCY), *mode, *extra]


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, NO_GCE_CHECK="true", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
                **extra)


def _paid(sim) -> int:
    return sum(sim.stats()["successes_by_image"].values())


@contextmanager
def _launched(command: list[str], **env: str) -> Iterator[subprocess.Popen]:
    """The launcher in a process group of its own; whatever is left is killed at the end."""
    proc = subprocess.Popen(command, env=_env(**env), start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for_answers(sim, proc: subprocess.Popen, fraction: float) -> tuple[int, list[int]]:
    """Wait until `fraction` of the images were answered; (answers so far, worker pids)."""
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "launcher ended"
        workers |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        answered = _paid(sim)
        if answered >= fraction * IMAGES:
            return answered, sorted(workers)
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def _worker_processes(launcher: subprocess.Popen, pids: list[int]) -> list[int]:
    """The pids that are worker processes: forked from the launcher (runner/forked.py, same
    command line) or started from scratch (runner/worker.py)."""
    own = psutil.Process(launcher.pid).cmdline()
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            line = psutil.Process(pid).cmdline()
            if line == own or "beam_caption.runner.worker" in " ".join(line):
                found.append(pid)
    return found


def _assert_gone(pids: list[int]) -> None:
    """Every worker process ended (within a few seconds of the launcher)."""
    procs = [p for pid in pids if psutil.pid_exists(pid) for p in [psutil.Process(pid)]]
    _, alive = psutil.wait_procs(procs, timeout=10)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"worker processes left running: {[p.pid for p in alive]}"


def _resume_and_check(photos: Path, out: Path, sim) -> int:
    """Resume; every image gets exactly one row; returns how many answers were paid twice."""
    done = subprocess.run(_command(photos, out, sim, "--resume"), env=_env(), text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = sim.stats()
    ledger = stats["successes_by_image"]
    assert len(ledger) == IMAGES, "every image was answered once at least"
    twice = sum(count - 1 for count in ledger.values())
    rows = read_rows(out, "captions")
    per_uri = collections.Counter(row["uri"] for row in rows)
    assert sorted(Path(u).name for u in per_uri) == sorted(p.name for p in photos.glob("*.jpg"))
    assert set(per_uri.values()) == {1}, "exactly one row per image"
    assert read_rows(out, "errors") == []
    assert not list(out.glob("_journal/*/*")), "the journal was folded in and removed"
    assert not list(out.glob("beam-temp-*")), "the killed run's temporary files were removed"
    # Every answer's money is in the tables once; the ledger also has the answers paid twice.
    table, billed = sum(r["cost_usd"] for r in rows), stats["cost_usd"]["realtime"]
    most = max(r["cost_usd"] for r in rows)
    assert billed - twice * most - 1e-12 <= table <= billed + 1e-12
    return twice


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", [WORKER_PROCESSES, IN_PROCESS], ids=["workers", "in-process"])
def test_ctrl_c_writes_every_answer_and_resume_pays_for_none_again(photos, sim, tmp_path,
                                                                   mode) -> None:
    seed = random.randrange(1 << 30)
    fraction = random.Random(seed).uniform(0.3, 0.9)
    print(f"seed {seed}: interrupt at {fraction:.0%} of the answers")
    out = tmp_path / "out"
    with _launched(_command(photos, out, sim, mode=mode)) as proc:
        answered, workers = _wait_for_answers(sim, proc, fraction)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        started = time.monotonic()
        output, _ = proc.communicate(timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 130, output[-3000:]
    assert took < 30, "requests in flight finish in well under the grace period"
    lines = [line for line in output.splitlines() if line.startswith("beam-caption: interrupted")]
    assert len(lines) == 1 and str(out) in lines[0] and "--resume" in lines[0], output[-3000:]
    assert "Traceback" not in output
    _assert_gone(workers)

    paid = _paid(sim)
    captions, errors = read_rows(out, "captions"), read_rows(out, "errors")
    assert len(captions) == paid >= answered, "every paid answer is in the table"
    assert len(captions) + len(errors) == IMAGES
    assert {(e["code"], e["stage"]) for e in errors} <= {("interrupted", "request")}
    assert all(e["message"].startswith("not sent") for e in errors)
    assert not list(out.glob("_journal/*/*")), "the tables hold everything: the journal is gone"
    assert _resume_and_check(photos, out, sim) == 0


@pytest.mark.timeout(300)
def test_kill_9_of_the_process_group_loses_nothing_paid(photos, sim, tmp_path) -> None:
    seed = random.randrange(1 << 30)
    fraction = random.Random(seed).uniform(0.3, 0.9)
    print(f"seed {seed}: kill -9 at {fraction:.0%} of the answers")
    out = tmp_path / "out"
    with _launched(_command(photos, out, sim)) as proc:
        answered, workers = _wait_for_answers(sim, proc, fraction)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    _assert_gone(workers)
    assert not list(out.glob("captions-*.parquet")), "nothing was finalized"
    journaled = sum(1 for path in out.glob("_journal/*/*.jsonl")
                    for line in path.read_text().splitlines() if line.strip())
    assert journaled >= answered - WINDOW, "the answers received were journaled as they came"

    # The report sees the journaled answers before any resume (and says where they are).
    report = subprocess.run([*BEAM_CAPTION, "report", str(out), "--json", str(tmp_path / "r.json")],
                            env=_env(), text=True, capture_output=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "interrupted run" in report.stdout and "--resume" in report.stdout
    assert json.loads((tmp_path / "r.json").read_text())["captions"] == len(
        {line for path in out.glob("_journal/*/*.jsonl") for line in path.read_text().splitlines()
         if line.strip()})

    refused = subprocess.run(_command(photos, out, sim), env=_env(), text=True,
                             capture_output=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr, refused.stderr[-2000:]
    twice = _resume_and_check(photos, out, sim)
    print(f"{answered} answers before the kill, {twice} paid again")
    assert twice <= WINDOW
    assert read_summary(out)["carried_over"] >= answered - WINDOW, "carried from the journal"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", [WORKER_PROCESSES, IN_PROCESS], ids=["workers", "in-process"])
def test_a_second_ctrl_c_quits_at_once_and_keeps_what_was_received(photos, sim, tmp_path,
                                                                   mode) -> None:
    out = tmp_path / "out"
    with _launched(_command(photos, out, sim, "--interrupt-grace", "60", mode=mode)) as proc:
        _, workers = _wait_for_answers(sim, proc, random.uniform(0.3, 0.7))
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        started = time.monotonic()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output[-3000:]
    assert time.monotonic() - started < 5, "the second Ctrl-C does not wait for anything"
    assert "stopped at once" in output and "--resume" in output and "Traceback" not in output
    _assert_gone(workers)
    assert _resume_and_check(photos, out, sim) <= WINDOW


@pytest.mark.timeout(300)
def test_sigterm_to_the_launcher_alone_stops_like_ctrl_c(photos, sim, tmp_path) -> None:
    out = tmp_path / "out"
    with _launched(_command(photos, out, sim)) as proc:
        _, workers = _wait_for_answers(sim, proc, 0.4)
        proc.terminate()  # what a scheduler or `timeout` sends, to the launcher only
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output[-3000:]
    _assert_gone(workers)
    assert len(read_rows(out, "captions")) == _paid(sim)
    assert _resume_and_check(photos, out, sim) == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked-workers", "fresh-workers"])
def test_a_killed_worker_process_ends_the_run_with_one_line_and_resume_finishes(
        photos, sim, tmp_path, fork) -> None:
    out = tmp_path / "out"
    with _launched(_command(photos, out, sim), BEAM_CAPTION_FORK_WORKERS=fork) as proc:
        _, workers = _wait_for_answers(sim, proc, 0.4)
        victims = _worker_processes(proc, workers)
        assert len(victims) == WORKERS, "both worker processes were found"
        os.kill(victims[0], signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output[-3000:]
    stopped = [line for line in output.splitlines() if line.startswith("beam-caption: stopped")]
    assert len(stopped) == 1 and "--resume" in stopped[0], output[-3000:]
    _assert_gone(workers)
    assert _resume_and_check(photos, out, sim) <= WINDOW


@pytest.mark.timeout(300)
def test_workers_do_not_outlive_a_killed_launcher(photos, sim, tmp_path) -> None:
    out = tmp_path / "out"
    with _launched(_command(photos, out, sim)) as proc:
        _, workers = _wait_for_answers(sim, proc, 0.3)
        assert workers, "the run has worker processes"
        os.kill(proc.pid, signal.SIGKILL)  # the launcher alone, not its group
        proc.wait(30)
        _assert_gone(workers)
        paid = _paid(sim)
        time.sleep(1)
        assert _paid(sim) - paid <= WINDOW, "nothing new is sent once the launcher is gone"
    assert _resume_and_check(photos, out, sim) <= WINDOW
