"""Local worker processes forked from the launcher (runner/forked.py): a real multi-process run
uses them and starts no worker from scratch; unclaimed ones leave when released; a launcher
with other threads running forks nothing."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from beam_caption.simulator import running_simulator_process
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import read_rows

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 120


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, NO_GCE_CHECK="true", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                           if p), **extra)


def _processes_during(proc: subprocess.Popen) -> dict[int, tuple[int, list[str]]]:
    """Every descendant of `proc` seen while it runs: pid -> (parent pid, its last command
    line: a handoff that finds no forked worker execs a fresh one under the same pid)."""
    seen: dict[int, tuple[int, list[str]]] = {}
    launcher = psutil.Process(proc.pid)
    while proc.poll() is None:
        for child in launcher.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                line = child.cmdline()
                # A child that has exited but is not reaped yet reads as an empty command
                # line; keep the last real one it had.
                if line or child.pid not in seen:
                    seen[child.pid] = (child.ppid(), line)
        time.sleep(0.01)
    return seen


@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked", "fresh"])
def test_a_multi_process_run_uses_forked_workers(tmp_path: Path, fork: str) -> None:
    make_small_photos(tmp_path / "photos", IMAGES)
    out = tmp_path / "out"
    with running_simulator_process(latency_ms=100) as sim:
        command = [sys.executable, "-m", "beam_caption", "run", "--input",
                   str(tmp_path / "photos" / "*.jpg"), "--output", str(out), "--base-url",
                   sim.base_url, "--direct_num_workers=2", "--log-level", "DEBUG"]
        log = tmp_path / "launcher.log"
        with open(log, "w") as sink:  # a file, not a pipe nobody reads while this polls
            proc = subprocess.Popen(command, env=_env(BEAM_CAPTION_FORK_WORKERS=fork),
                                    stdout=sink, stderr=subprocess.STDOUT)
            seen = _processes_during(proc)
            proc.wait(timeout=300)
        output = log.read_text()
        paid = sum(sim.stats()["successes_by_image"].values())
    assert proc.returncode == 0, output[-3000:]
    assert len(read_rows(out, "captions")) == IMAGES and paid == IMAGES
    # The launcher's own children only: a worker's short-lived children (a library running a
    # command) carry the worker's command line until they exec.
    lines = [" ".join(line) for parent, line in seen.values() if parent == proc.pid]
    fresh = [line for line in lines if "beam_caption.runner.worker" in line]
    handoffs = [line for line in lines if "beam_caption.runner.handoff" in line]
    forked = [pid for pid, (parent, line) in seen.items()
              if parent == proc.pid and line == command[:1] + command[1:]]
    if fork == "1":
        assert "2 worker processes forked from the launcher" in output
        assert fresh == [], "no worker started from scratch"
        assert len(forked) == 2 and len(handoffs) == 2, lines
    else:  # each handoff found nothing to claim and became a fresh worker
        assert len(fresh) == 2 and handoffs == [] and forked == [], lines
        assert "forked from the launcher" not in output
    assert not [p for p in seen if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], "none is left running"


RELEASE = """
import json, os, sys, time
from beam_caption.runner.forked import ForkedWorkers, FORKED_DIR_ENV
with ForkedWorkers(int(sys.argv[1])) as workers:
    folder = os.environ.get(FORKED_DIR_ENV)
    sockets = sorted(os.listdir(folder)) if folder else []
print(json.dumps({"pids": workers.pids, "statuses": workers.statuses, "sockets": sockets,
                  "env_left": FORKED_DIR_ENV in os.environ,
                  "folder_left": bool(folder) and os.path.exists(folder)}))
"""


def test_unclaimed_forked_workers_leave_when_released() -> None:
    done = subprocess.run([sys.executable, "-c", RELEASE, "3"], env=_env(), text=True,
                          capture_output=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert len(report["pids"]) == 3
    assert report["sockets"] == ["ready-0.sock", "ready-1.sock", "ready-2.sock"]
    # Exit status 0: each left on its own when released, none had to be killed.
    assert sorted(report["statuses"].values()) == [0, 0, 0]
    assert not report["env_left"] and not report["folder_left"]
    assert not any(psutil.pid_exists(pid) for pid in report["pids"])


THREADED = """
import json, threading, time
from beam_caption.runner.forked import ForkedWorkers
stop = threading.Event()
threading.Thread(target=stop.wait).start()
with ForkedWorkers(2) as workers:
    pids = workers.pids
stop.set()
print(json.dumps(pids))
"""


def test_a_launcher_with_threads_running_forks_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", THREADED], env=_env(), text=True,
                          capture_output=True, timeout=60, check=True)
    assert json.loads(done.stdout) == []


def test_a_temp_folder_too_deep_for_unix_sockets_starts_workers_from_scratch(tmp_path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # socket paths over AF_UNIX's 108 bytes
    deep.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", RELEASE, "2"], env=_env(TMPDIR=str(deep)),
                          text=True, capture_output=True, timeout=60, check=True)
    report = json.loads(done.stdout)
    assert report["pids"] == [] and report["sockets"] == [] and not report["env_left"]
    assert list(deep.iterdir()) == [], "its temporary folder was removed"
    # The whole command still runs, with workers started from scratch.
    make_small_photos(tmp_path / "photos", 12)
    with running_simulator_process(latency_ms=20) as sim:
        run = subprocess.run(
            [sys.executable, "-m", "beam_caption", "run", "--input",
             str(tmp_path / "photos" / "*.jpg"), "--output", str(tmp_path / "out"),
             "--base-url", sim.base_url, "--direct_num_workers=2"],
            env=_env(TMPDIR=str(deep)), text=True, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(read_rows(tmp_path / "out", "captions")) == 12
