"""Per-worker progress: images done, images/s, errors, tokens and dollars.

Each worker process keeps one `Progress` (resources.py), fed by PrepareImages (images
that failed before any request) and the engine (every finished request). It logs a line every
`interval_s` while work happens (the local runner forwards worker logs; Dataflow shows them in the
worker logs; the same numbers are Beam counters) and, for local runs, writes a small JSON snapshot
that the launcher's live progress bar (beam_caption.cli.live) adds up across processes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from beam_caption import resources

_LOG = logging.getLogger("beam_caption.engine.progress")
SNAPSHOT_EVERY_S = 0.5


@dataclass(frozen=True)
class ProgressSettings:
    """How a worker reports progress: log interval, expected total, snapshot folder (local)."""

    interval_s: float = 10.0
    expected_images: int | None = None
    snapshot_dir: str | None = None


class Progress:
    """Counts finished images; logs a line at most every `interval_s` seconds."""

    def __init__(self, interval_s: float, expected_images: int | None = None,
                 clock=time.monotonic, snapshot_dir: str | None = None) -> None:
        self.interval_s = interval_s
        self.expected_images = expected_images
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_line = self._started
        self._last_snapshot = -float("inf")
        self._snapshot_path = (os.path.join(snapshot_dir, f"progress-{os.getpid()}.json")
                               if snapshot_dir else None)
        self.done = 0
        self.errors = 0
        self.tokens = 0
        self.cost_usd = 0.0

    def record(self, *, ok: bool, tokens: int = 0, cost_usd: float = 0.0) -> None:
        """Count one finished image; log a line if the interval has passed."""
        with self._lock:
            self.done += 1
            self.errors += 0 if ok else 1
            self.tokens += tokens
            self.cost_usd += cost_usd
            now = self._clock()
            due = self.interval_s > 0 and now - self._last_line >= self.interval_s
            if due:
                self._last_line = now
                line = self.line(now)
            if self._snapshot_path and now - self._last_snapshot >= SNAPSHOT_EVERY_S:
                self._last_snapshot = now
                self._write_snapshot()
        if due:
            _LOG.info(line)

    def flush(self) -> None:
        """Write the final snapshot (called when a bundle ends)."""
        with self._lock:
            if self._snapshot_path:
                self._write_snapshot()

    def _write_snapshot(self) -> None:
        assert self._snapshot_path is not None
        snapshot = {"done": self.done, "errors": self.errors, "tokens": self.tokens,
                    "cost_usd": self.cost_usd}
        temporary = f"{self._snapshot_path}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(snapshot, handle)
            os.replace(temporary, self._snapshot_path)  # readers never see half a file
        except OSError:
            pass  # progress is a nicety: never fail an image over it

    def line(self, now: float | None = None) -> str:
        """The progress line as it would be logged now."""
        now = self._clock() if now is None else now
        elapsed = max(1e-9, now - self._started)
        rate = self.done / elapsed
        text = (f"[worker {os.getpid()}] {self.done} images done ({self.errors} errors), "
                f"{rate:.1f} images/s, {self.tokens} tokens, ${self.cost_usd:.4f} so far")
        if self.expected_images and self.done:
            projected = self.cost_usd / self.done * self.expected_images
            text += f", projected ${projected:.2f} for all {self.expected_images} images"
        return text


def process_progress(settings: ProgressSettings) -> Progress:
    """This process's Progress for `settings`, created on first use and kept."""
    return resources.kept(("progress", settings), lambda: Progress(
        settings.interval_s, settings.expected_images, snapshot_dir=settings.snapshot_dir))
