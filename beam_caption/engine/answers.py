"""Answer memory: a request_key answered once in a worker process is not paid for again there.

Two things look alike here and are told apart by the image's uri and source id:
- a *redelivery*: the same image again (Beam retried the bundle that held it, or a second
  pipeline in this process runs the same run): it gets the very answer it had, as if nothing
  happened, so its row is identical and counts the money once;
- a *duplicate*: another image with the same bytes and settings (or the same file listed under
  another id): it shares the answer, keeps the real usage and cost, and says which image paid
  (`shared_from`), so totals count it once.

Only outcomes that carry an answer are remembered: a success, or an error the provider billed and
that would repeat (a content filter). The memory is bounded (least recently used first out).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar


class Outcome(Protocol):
    """What the memory needs of an outcome (engine/jobs.py's CaptionOutcome, a dataclass)."""

    @property
    def carries_answer(self) -> bool:
        """True when the provider answered and billed."""

    def remembered(self) -> Outcome:
        """The outcome as it is kept: what a copy's row needs, nothing more."""


CaptionOutcome = TypeVar("CaptionOutcome", bound=Outcome)

# About 0.8 KB per remembered answer (a caption, its usage, two strings and a key, measured):
# 16 MB at most per worker process and run.
DEFAULT_CAPACITY = 20_000


@dataclass(slots=True)
class _Entry:
    uri: str
    source_id: str | None
    # While the first copy is in flight; then only its outcome is kept (a future is 150 bytes).
    future: asyncio.Future[CaptionOutcome] | None
    outcome: CaptionOutcome | None = None


class AnswerMemory:
    """request_key -> the outcome that answered it; used on the engine's event loop only."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def answer(self, key: str, uri: str,
                     send: Callable[[], Awaitable[CaptionOutcome]],
                     source_id: str | None = None) -> CaptionOutcome:
        """The remembered answer for `key`, or `send()`'s, remembered if it carries an answer.

        A copy that arrives while the first is still in flight waits for it.
        """
        earlier = self._entries.get(key)
        if earlier is not None:
            self._entries.move_to_end(key)
            outcome = earlier.outcome
            if outcome is None and earlier.future is not None:
                outcome = await _wait_for(earlier.future)
            if outcome is not None and outcome.carries_answer:
                redelivered = (earlier.uri, earlier.source_id) == (uri, source_id)
                return _reuse(outcome, earlier.uri, redelivered)
            # The first copy got no answer: this copy is a chance of its own.
            return await send()
        future: asyncio.Future[CaptionOutcome] = asyncio.get_running_loop().create_future()
        entry = _Entry(uri, source_id, future)
        self._entries[key] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        try:
            outcome = await send()
        except BaseException:
            future.cancel()  # copies waiting on it send on their own
            entry.future = None
            self._forget(key, entry)
            raise
        kept = outcome.remembered()
        future.set_result(kept)  # copies already waiting hold the future itself
        entry.future, entry.outcome = None, kept
        if not outcome.carries_answer:
            self._forget(key, entry)
        return outcome

    def _forget(self, key: str, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]


async def _wait_for(future: asyncio.Future[CaptionOutcome]) -> CaptionOutcome | None:
    """The first copy's outcome; None if it was cancelled (our own cancellation propagates)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if future.cancelled():
            return None
        raise


def _reuse(outcome: CaptionOutcome, payer_uri: str, redelivered: bool) -> CaptionOutcome:
    if redelivered:
        return replace(outcome, redelivered=True)
    return replace(outcome, attempts=0, latency_ms=None, shared_from=payer_uri,
                   redelivered=False)
