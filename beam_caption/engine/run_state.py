"""What one worker process knows about one run: its spend share, its stop, its answers, its journal.

A RunState lives as long as the worker process (a module-level registry keyed by the run), not as
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
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from beam_caption.api.errors import ApiError, AuthError, BadRequest, QuotaExceeded
from beam_caption.engine.answers import AnswerMemory
from beam_caption.engine.budget import SpendCap
from beam_caption.engine.loop import get_loop_thread
from beam_caption.engine.progress import Progress, ProgressSettings, process_progress
from beam_caption.pipeline.journal import AnswerJournal, process_journal

_LOG = logging.getLogger(__name__)
INTERRUPT_FILE = "interrupt"
INTERRUPTED = "interrupted"
_WATCH_EVERY_S = 0.2


@dataclass(frozen=True)
class StopReason:
    """Why a run stopped sending: later jobs end at once with this stage and code."""

    stage: str
    code: str
    message: str


@dataclass(frozen=True)
class RunSettings:
    """The per-run, per-process settings a RunState is built from (hashable: the registry key)."""

    run_id: str
    spend_share_usd: float | None = None
    max_cost_usd: float | None = None  # the whole run's cap (messages only)
    journal_dir: str | None = None
    control_dir: str | None = None  # local runs: the launcher's interrupt flag lives here
    grace_s: float = 30.0
    abort_after_identical_failures: int = 8
    progress: ProgressSettings = field(default_factory=ProgressSettings)


class FailureStreak:
    """Stop the run when the same terminal failure repeats: 76,000 identical rows help nobody.

    Three 401/403/insufficient_quota in a row, or `threshold` identical 400s before any success.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._lock = threading.Lock()
        self._last = ("", 0)
        self._successes = 0

    def success(self) -> None:
        """An answer arrived: the streak starts over."""
        with self._lock:
            self._successes += 1
            self._last = ("", 0)

    def failure(self, error: ApiError) -> StopReason | None:
        """A job ended with `error`; the reason to stop the run, if this makes a streak."""
        code = error.row_code
        with self._lock:
            last, count = self._last
            count = count + 1 if code == last else 1
            self._last = (code, count)
            successes = self._successes
        threshold = self.threshold
        if isinstance(error, AuthError | QuotaExceeded):
            threshold = min(threshold, 3)
        elif not isinstance(error, BadRequest) or successes:
            return None  # a 400 after successes is about one image, not the run
        if count < threshold:
            return None
        return StopReason("request", code, _streak_message(error, count))


def _streak_message(error: ApiError, count: int) -> str:
    hint = ""
    if isinstance(error, AuthError):
        hint = (" Check the API key (OPENAI_API_KEY, --api-key-env, --api-key-file or "
                "--api-key-secret).")
    elif isinstance(error, QuotaExceeded):
        hint = " The account has no quota left; add credit, then run again with --resume."
    return (f"{count} requests in a row failed with {error.row_code}: {error}.{hint} "
            "Images not yet sent were not charged.")


class RunState:
    """One run as seen by one worker process; thread-safe, with its waits on the engine loop."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.budget = SpendCap(settings.spend_share_usd)
        self.answers = AnswerMemory()
        self.failures = FailureStreak(settings.abort_after_identical_failures)
        self.journal: AnswerJournal | None = (process_journal(settings.journal_dir)
                                              if settings.journal_dir else None)
        self.progress: Progress = process_progress(settings.progress)
        self._loop = get_loop_thread("engine").loop
        self._lock = threading.Lock()
        self._stop: StopReason | None = None
        self._stopped_event: asyncio.Event | None = None
        self._hard_stopped = False
        self._scopes: set[asyncio.Timeout] = set()
        self._wakers: list[Callable[[], None]] = []
        self.stop_counted = False

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


_states: dict[RunSettings, RunState] = {}
_states_lock = threading.Lock()


def run_state(settings: RunSettings) -> RunState:
    """This process's RunState for `settings`, created on first use, kept for the process."""
    with _states_lock:
        state = _states.get(settings)
        if state is None:
            state = _states[settings] = RunState(settings)
            if settings.control_dir:
                _watch(settings.control_dir)
    if settings.control_dir and os.path.exists(os.path.join(settings.control_dir,
                                                            INTERRUPT_FILE)):
        state.stop(_interrupted(settings.grace_s))  # set up after the interrupt came
    return state


def stop_reason(run_id: str) -> StopReason | None:
    """Why run `run_id` stopped sending in this process, if it did (PrepareImages asks)."""
    with _states_lock:
        states = [s for k, s in _states.items() if k.run_id == run_id]
    return next((s.stopped for s in states if s.stopped is not None), None)


def _interrupted(grace_s: float) -> StopReason:
    return StopReason("request", INTERRUPTED,
                      "the run was interrupted (Ctrl-C or SIGTERM): nothing new was sent, "
                      f"requests in flight had {grace_s:g} s to finish; run again with --resume "
                      "for the rest")


_watched: set[str] = set()


def _watch(control_dir: str) -> None:
    """Start (once per process) the thread that turns the launcher's interrupt flag into stops."""
    if control_dir in _watched:
        return
    _watched.add(control_dir)
    flag = os.path.join(control_dir, INTERRUPT_FILE)

    def poll() -> None:
        tick = threading.Event()
        while not tick.wait(_WATCH_EVERY_S):
            if os.path.exists(flag):
                break
            if not os.path.isdir(control_dir):
                return  # the launcher is gone and took its folder with it
        with _states_lock:
            targets = [s for k, s in _states.items() if k.control_dir == control_dir]
        for state in targets:
            state.stop(_interrupted(state.settings.grace_s))

    threading.Thread(target=poll, name="beam-caption-interrupt", daemon=True).start()
