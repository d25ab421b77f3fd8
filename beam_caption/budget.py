"""The spend cap (--max-cost-usd): this worker process's share of the run's budget.

Before a request is sent its worst-case cost (estimated prompt tokens at the input price plus the
full output cap at the output price) is reserved; when the answer arrives the reservation is
replaced by the real cost. A request is refused when spent + reserved + its own worst case would
pass the share, so the cap holds even with every slot in flight; the only overshoot left is an
estimate that undercounts the prompt (measured within a few percent). A request that does not fit
while others are in flight waits for them to settle (they usually cost less than their worst
case); only when nothing is in flight and it still does not fit is the share spent.
"""

from __future__ import annotations

import threading

from beam_caption.pricing import ModelPrice


class SpendCap:
    """Thread-safe spend accounting against `share_usd` (None = no cap, count only)."""

    def __init__(self, share_usd: float | None, price: ModelPrice | None) -> None:
        self.share_usd = share_usd
        self._price = price
        self._lock = threading.Lock()
        self._spent = 0.0
        self._reserved = 0.0

    @property
    def reserved_usd(self) -> float:
        """Dollars reserved by requests still in flight."""
        return self._reserved

    @property
    def spent_usd(self) -> float:
        """Dollars billed so far by this process (real usage)."""
        return self._spent

    def worst_case_usd(self, prompt_tokens: int, max_output_tokens: int) -> float:
        """The most one request can cost: its prompt estimate and the whole output cap."""
        if self._price is None:
            return 0.0
        return self._price.cost_usd(prompt_tokens, max_output_tokens)

    def try_reserve(self, amount_usd: float) -> bool:
        """Reserve `amount_usd` if it fits under the share; False means: do not send."""
        with self._lock:
            if self.share_usd is not None and (
                    self._spent + self._reserved + amount_usd > self.share_usd):
                return False
            self._reserved += amount_usd
            return True

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Replace a reservation by what the answer really cost (0 if it was not billed)."""
        with self._lock:
            self._reserved = max(0.0, self._reserved - reserved_usd)
            self._spent += actual_usd
