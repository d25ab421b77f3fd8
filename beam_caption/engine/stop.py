"""Why a run stops sending, and the two policies that decide it outside the spend cap: the same
terminal failure repeated, and the launcher's interrupt flag (Ctrl-C or SIGTERM on a local run).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from beam_caption.api.errors import ApiError, AuthError, BadRequest, QuotaExceeded

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
        # Provider-neutral: the variable is OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY
        # by default, whatever --api-key-env names otherwise.
        hint = (" Check the API key (the provider's variable, or what --api-key-env, "
                "--api-key-file or --api-key-secret name).")
    elif isinstance(error, QuotaExceeded):
        hint = " The account has no quota left; add credit, then run again with --resume."
    return (f"{count} requests in a row failed with {error.row_code}: {error}.{hint} "
            "Images not yet sent were not charged.")


def interrupt_reason(grace_s: float) -> StopReason:
    """The stop of a run whose launcher was interrupted."""
    return StopReason("request", INTERRUPTED,
                      "the run was interrupted (Ctrl-C or SIGTERM): nothing new was sent, "
                      f"requests in flight had {grace_s:g} s to finish; run again with --resume "
                      "for the rest")


def interrupted(control_dir: str) -> bool:
    """True once the launcher has raised the interrupt flag in `control_dir`."""
    return os.path.exists(os.path.join(control_dir, INTERRUPT_FILE))


_watched: set[str] = set()
_watched_lock = threading.Lock()


def watch_interrupts(control_dir: str, targets: Callable[[str], Iterable[Any]]) -> None:
    """Start (once per process and folder) the thread that stops every run `targets(dir)` names
    when the launcher raises its interrupt flag; it ends when the folder goes away."""
    with _watched_lock:
        if control_dir in _watched:
            return
        _watched.add(control_dir)

    def poll() -> None:
        tick = threading.Event()
        while not tick.wait(_WATCH_EVERY_S):
            if interrupted(control_dir):
                break
            if not os.path.isdir(control_dir):
                return  # the launcher is gone and took its folder with it
        for state in targets(control_dir):
            state.stop(interrupt_reason(state.settings.grace_s))

    threading.Thread(target=poll, name="beam-caption-interrupt", daemon=True).start()
