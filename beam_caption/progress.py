"""A periodic progress line per worker process: images done, images/s, errors, tokens, dollars.

Written to the log (which the local runner forwards from its worker processes, and Dataflow shows
in the worker logs) every `interval_s` while work is happening. The same numbers are Beam counters
for the Dataflow UI. With the run's image count known, it projects the total cost.
"""

from __future__ import annotations

import logging
import os
import threading
import time

_LOG = logging.getLogger("beam_caption.progress")


class Progress:
    """Counts finished images and logs a line at most every `interval_s` seconds."""

    def __init__(self, interval_s: float, expected_images: int | None = None,
                 clock=time.monotonic) -> None:
        self.interval_s = interval_s
        self.expected_images = expected_images
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_line = self._started
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
        if due:
            _LOG.info(line)

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
