"""What one worker process knows about one run: its spend share, its stop, its answers.

A RunState lives as long as the worker process (resources.py, keyed by the run), not as
long as an engine or a DoFn: Beam tears idle DoFns down and sets new ones up, and a spend share,
a stop or an answer must not be forgotten when that happens. Engines are shared by runs that talk
to the same endpoint; everything that belongs to a run is here.

Stopping: the first reason wins (spend cap reached, a terminal failure repeated, Ctrl-C). After a
stop nothing new is sent; jobs waiting for a slot, a bucket, a backoff or the budget end at once.
Requests already in flight finish, except after an interrupt, when they get `grace_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from beam_caption import resources
from beam_caption.engine.answers import AnswerMemory
from beam_caption.engine.budget import SpendCap
from beam_caption.engine.loop import get_loop_thread
from beam_caption.engine.progress import Progress, ProgressSettings, process_progress
from beam_caption.engine.stop import (
    INTERRUPTED,
    FailureStreak,
    StopReason,
    interrupt_reason,
    interrupted,
    watch_interrupts,
)

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """The per-run, per-process settings a RunState is built from (hashable: the registry key)."""

    run_id: str
    spend_share_usd: float | None = None
    max_cost_usd: float | None = None  # the whole run's cap (messages only)
    control_dir: str | None = None  # local runs: the launcher's interrupt flag lives here
    grace_s: float = 30.0
    abort_after_identical_failures: int = 8
    progress: ProgressSettings = field(default_factory=ProgressSettings)


class RunState:
    """One run as seen by one worker process; thread-safe, with its waits on the engine loop."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.budget = SpendCap(settings.spend_share_usd)
        self.answers = AnswerMemory()
        self.failures = FailureStreak(settings.abort_after_identical_failures)
        self.progress: Progress = process_progress(settings.progress)
        self._loop = get_loop_thread("engine").loop
        self._lock = threading.Lock()
        self._stop: StopReason | None = None
        self._stopped_event: asyncio.Event | None = None
        self._hard_stopped = False
        self._scopes: set[asyncio.Timeout] = set()
        self._wakers: list[Callable[[], None]] = []

    @property
    def stopped(self) -> StopReason | None:
        """Why the run stopped sending, or None while it sends."""
        return self._stop

    def stop(self, reason: StopReason) -> None:
        """Stop sending new requests (callable from any thread; the first reason wins)."""
        with self._lock:
            if self._stop is not None:
                return
            self._stop = reason
        level = logging.WARNING if reason.code == INTERRUPTED else logging.ERROR
        _LOG.log(level, "beam-caption stopped sending requests: %s", reason.message)
        self._loop.call_soon_threadsafe(self._wake_all)
        if reason.code == INTERRUPTED:
            self._loop.call_soon_threadsafe(self._loop.call_later, self.settings.grace_s,
                                            self._hard_stop)

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Call `wake()` on the engine loop when the run stops (engines wake slot waiters)."""
        with self._lock:
            if wake not in self._wakers:
                self._wakers.append(wake)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False if the run stopped meanwhile (the sleep ends early)."""
        if self._stop is not None:
            return False
        if seconds <= 0:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event().wait(), seconds)
        return self._stop is None

    @contextlib.asynccontextmanager
    async def in_flight(self) -> AsyncIterator[None]:
        """Around a request on the wire: after an interrupt's grace period it times out."""
        deadline = asyncio.get_running_loop().time() if self._hard_stopped else None
        async with asyncio.timeout(deadline) as scope:
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)

    @property
    def abandoned(self) -> bool:
        """True once in-flight requests were given up (the grace period after an interrupt)."""
        return self._hard_stopped

    def _event(self) -> asyncio.Event:
        if self._stopped_event is None:
            self._stopped_event = asyncio.Event()
            if self._stop is not None:
                self._stopped_event.set()
        return self._stopped_event

    def _wake_all(self) -> None:
        self._event().set()
        self._loop.create_task(self.budget.wake())
        for wake in list(self._wakers):
            wake()

    def _hard_stop(self) -> None:
        self._hard_stopped = True
        now = self._loop.time()
        for scope in list(self._scopes):
            scope.reschedule(now)
        if self._scopes:
            _LOG.warning("gave up %d requests still in flight %.0f s after the interrupt",
                         len(self._scopes), self.settings.grace_s)


def run_state(settings: RunSettings) -> RunState:
    """This process's RunState for `settings`, created on first use, kept for the process."""

    def create() -> RunState:
        state = RunState(settings)
        if settings.control_dir:
            watch_interrupts(settings.control_dir, _states_for)
        return state

    state = resources.kept(("run", settings), create)
    if settings.control_dir and interrupted(settings.control_dir):
        state.stop(interrupt_reason(settings.grace_s))  # set up after the interrupt came
    return state


def stop_reason(run_id: str) -> StopReason | None:
    """Why run `run_id` stopped sending in this process, if it did (PrepareImages asks)."""
    states = [s for key, s in resources.values("run") if key[1].run_id == run_id]
    return next((s.stopped for s in states if s.stopped is not None), None)


def _states_for(control_dir: str) -> list[RunState]:
    return [s for key, s in resources.values("run") if key[1].control_dir == control_dir]
