"""The launcher's live progress for local runs: a bar on a terminal, a log line otherwise.

Worker processes write small JSON snapshots (beam_caption.engine.progress); a thread here adds
them up every half second and shows images done / total, images/s, errors, tokens, dollars and
an ETA.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

from beam_caption.cost.pricing import format_usd

_LOG = logging.getLogger("beam_caption.cli.live")


def read_snapshots(folder: str) -> dict[str, float]:
    """The sum of every worker's latest snapshot in `folder`."""
    total = {"done": 0.0, "errors": 0.0, "tokens": 0.0, "cost_usd": 0.0}
    for path in glob.glob(os.path.join(folder, "progress-*.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                snapshot = json.load(handle)
        except (OSError, ValueError):
            continue  # being replaced right now: next tick
        for key in total:
            total[key] += float(snapshot.get(key, 0))
    return total


def progress_line(totals: dict[str, float], expected: int | None, elapsed_s: float) -> str:
    """One line: done/total, rate, errors, tokens, dollars (always four decimals, so the figure
    keeps its format as it grows) and ETA."""
    done = int(totals["done"])
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    text = f"{done}" + (f"/{expected}" if expected else "") + " images"
    text += f", {rate:.1f}/s, {int(totals['errors'])} errors, {int(totals['tokens'])} tokens"
    text += f", {format_usd(totals['cost_usd'], decimals=4)}"
    if expected and rate > 0 and done < expected:
        text += f", ETA {_duration((expected - done) / rate)}"
    return text


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class LiveProgress:
    """Context manager showing progress while a local pipeline runs."""

    def __init__(self, folder: str, expected: int | None, log_every_s: float = 10.0,
                 stream: Any = None) -> None:
        self._folder = folder
        self._expected = expected
        self._log_every_s = log_every_s
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="beam-caption-live", daemon=True)
        self._started = time.monotonic()
        self._bar: Any = None

    def __enter__(self) -> LiveProgress:
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self._expected, unit="img", file=self._stream,
                             dynamic_ncols=True, desc="captioning")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self._tick(final=True)
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        last_line = time.monotonic()
        while not self._stop.wait(0.5):
            now = time.monotonic()
            if self._bar is not None:
                self._tick()
            elif self._log_every_s and now - last_line >= self._log_every_s:
                last_line = now
                self._tick()

    def _tick(self, final: bool = False) -> None:
        totals = read_snapshots(self._folder)
        elapsed = time.monotonic() - self._started
        if self._bar is not None:
            self._bar.n = int(totals["done"])
            self._bar.set_postfix_str(f"{int(totals['errors'])} errors, "
                                      f"{int(totals['tokens'])} tokens, "
                                      f"{format_usd(totals['cost_usd'], decimals=4)}",
                                      refresh=True)
        elif not final:
            _LOG.info("progress: %s", progress_line(totals, self._expected, elapsed))
