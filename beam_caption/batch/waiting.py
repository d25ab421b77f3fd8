"""Waiting for batches: poll each unfinished batch with a capped, doubling backoff and record
what changed in batches.json (used by `run --mode batch --wait` and `batch submit|collect --wait`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from beam_caption.batch import ledger as bs
from beam_caption.batch.api import BatchClient
from beam_caption.batch.collect import note_status
from beam_caption.batch.wire import TERMINAL

_LOG = logging.getLogger("beam_caption.batch")
# Waits between status checks start at FIRST_WAIT_S and double, up to the poll interval while
# batches progress and up to POLL_CAP_FACTOR intervals while nothing changes.
FIRST_WAIT_S = 1.0
POLL_CAP_FACTOR = 10


class ClientsForRuns(Protocol):
    """cli/batch.py's Clients: the batch client of a run's endpoint."""

    def for_run(self, run: bs.RunRecord) -> BatchClient:
        """The client for `run`."""


def next_delay(delay_s: float, *, changed: bool, interval_s: float) -> float:
    """The wait before the next status check, after waiting `delay_s` (0 before the first).

    The first waits are short (a small batch can end within seconds), then each wait doubles:
    up to `interval_s` while the batches make progress, up to POLL_CAP_FACTOR intervals while
    nothing changes (a batch queued for hours is not checked every 30 s all day).
    """
    first = min(FIRST_WAIT_S, interval_s)
    cap = interval_s if changed else POLL_CAP_FACTOR * interval_s
    return max(first, min(delay_s * 2, cap))


def wait_for_batches(output: str, ledger: bs.BatchLedger, runs: list[bs.RunRecord],
                     clients: ClientsForRuns, poll_interval_s: float, *,
                     sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll every submitted, unfinished batch until all have ended; log progress per batch
    (the waits between checks: `next_delay`)."""
    delay = 0.0
    while True:
        changed, running = False, 0
        for run in runs:
            client = clients.for_run(run)
            for shard in run.shards:
                if shard.batch_id is None or shard.collected or shard.status in TERMINAL:
                    continue
                info = client.get(shard.batch_id)
                if note_status(shard, info):
                    changed = True
                    _LOG.info("%s (shard %d/%d): %s, %d of %d done, %d failed", info.id,
                              shard.index + 1, len(run.shards), info.status, info.completed,
                              info.total or shard.lines, info.failed)
                running += 0 if info.terminal else 1
        if changed:
            bs.save_ledger(output, ledger)
        if not running:
            return
        delay = next_delay(delay, changed=changed, interval_s=poll_interval_s)
        sleep(delay)
