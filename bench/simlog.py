"""Reading the simulator's side of a run: its request log (the captioning phase) and its CPU.

The phase is measured by the server, the same way for every system: from the arrival of the
first chat request (its log time minus its handling time) to the last answer, so each system's
start-up (Beam's worker processes, imports) and shut-down (writing files) stay outside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psutil

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Phase:
    """The captioning phase of one run: its length and the 200 answers within it."""

    seconds: float
    ok: int
    first: float = 0.0  # wall-clock time the first chat request arrived (0: none)


class LogReader:
    """Reads the JSON-lines request log the simulator appends to, one run at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def skip_to_end(self) -> None:
        """Start the next run's window at the log's current end."""
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def phase(self) -> Phase:
        """The phase of the requests logged since skip_to_end()."""
        if not self.path.exists():
            return Phase(0.0, 0)
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            lines = handle.read().splitlines()
        first, last, ok = float("inf"), 0.0, 0
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if record.get("path") != CHAT_PATH:
                continue
            first = min(first, record.get("started", record["ts"] - record["latency_ms"] / 1000))
            last = max(last, record["ts"])
            ok += record.get("status") == 200
        return Phase(max(0.0, last - first) if ok else 0.0, ok,
                     first if first != float("inf") else 0.0)


def simulator_process() -> int | None:
    """The pid of our simulator child process (started by running_simulator_process)."""
    for child in psutil.Process().children():
        try:
            if "beam_caption.simulator" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of one process so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system
