"""Running one system as a child process and measuring it: wall time, CPU seconds of the whole
process tree, and peak resident memory of the whole tree (sum over processes, sampled).

CPU comes from getrusage(RUSAGE_CHILDREN) around the run: the kernel adds a process's CPU time
to its parent when the parent reaps it, so once our child has exited and been waited for, the
delta holds the child and every descendant it reaped (Beam's worker processes included). Peak
RSS is sampled with psutil every SAMPLE_S over the child and its descendants, summed: Beam's
multi-processing workers are separate processes, and ru_maxrss would only give the largest one.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_S = 0.05


@dataclass(frozen=True)
class Measurement:
    """One run of one system."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    log: Path


def _tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of `proc` and all its descendants right now (vanished ones count 0)."""
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 timeout_s: float = 1800.0) -> Measurement:
    """Run `cmd` to completion (stdout and stderr to `log`); measure it. Kills it on timeout."""
    cpu_before = _cpu_of_children()
    peak = 0
    stop = threading.Event()
    started = time.perf_counter()
    with open(log, "wb") as out:
        child = psutil.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                             env=env or dict(os.environ), start_new_session=True)

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _tree_rss(child))
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            returncode = child.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            _kill_tree(child)
            returncode = -9
        finally:
            stop.set()
            sampler.join()
    wall = time.perf_counter() - started
    return Measurement(returncode, wall, _cpu_of_children() - cpu_before, peak / 2**20, log)


def _kill_tree(proc: psutil.Process) -> None:
    """Kill a timed-out system and everything it started (by pid, nothing else)."""
    try:
        members = [*proc.children(recursive=True), proc]
    except psutil.Error:
        members = [proc]
    for member in members:
        with contextlib.suppress(psutil.Error):
            member.kill()
    proc.wait(30)
