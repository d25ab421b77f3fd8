"""The spend cap (--max-cost-usd): one worker process's share of the run's budget.

Before a request is sent its worst case (estimated prompt tokens at the input price plus the whole
output cap at the output price) is reserved; when the answer arrives the reservation is replaced
by the real cost. A request is refused when spent + reserved + its own worst case would pass the
share, so the share holds with every slot in flight; the only overshoot left is a prompt estimate
that undercounts. A request that does not fit while others are in flight waits for them to settle
(they usually cost less than their worst case); when nothing is in flight and it still does not
fit, the share is spent and `reserve` says so.

Money is counted in integer nano-dollars. With floats, reserving and settling the same amounts
can leave a residue (1e-20) that looks like a reservation in flight when there is none: the last
waiter would then wait for a settlement that never comes. That was the hang of issue 13.

A SpendCap belongs to the worker process and the run (see run_state.py), not to an engine or a
DoFn: Beam tears idle DoFns down and sets new ones up, and the share must not start over.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from enum import Enum

from beam_caption.cost.pricing import ModelPrice

NANO = 1_000_000_000


def to_nano(usd: float) -> int:
    """Dollars as integer nano-dollars, rounded up: a reservation never comes out smaller.
    Float noise below a thousandth of a nano-dollar is dropped first: 0.0001726 * 1e9 is
    172600.00000000003, which must stay 172600, or a cap of exactly one request refuses it."""
    return -int(-round(usd * NANO, 3) // 1)


class Reservation(Enum):
    """The answer of SpendCap.reserve when it does not hand out a reservation."""

    SPENT = "spent"  # nothing in flight and the request does not fit: the share is used up
    STOPPED = "stopped"  # the run stopped while the request waited


class SpendCap:
    """Spend accounting against `share_usd` (None = no cap, count only).

    `reserve`/`settle` run on the engine's event loop; `spent_usd` may be read from any thread.
    """

    def __init__(self, share_usd: float | None) -> None:
        self.share_usd = share_usd
        self._share = None if share_usd is None else round(share_usd * NANO)
        self._lock = threading.Lock()
        self._spent = 0
        self._reserved = 0
        self._outstanding = 0  # reservations not yet settled: an exact count, never a float
        self._settled: asyncio.Condition | None = None

    @property
    def spent_usd(self) -> float:
        """Dollars billed so far by this process (real usage)."""
        return self._spent / NANO

    @property
    def reserved_usd(self) -> float:
        """Dollars reserved by requests still in flight."""
        return self._reserved / NANO

    @property
    def outstanding(self) -> int:
        """Reservations not yet settled (requests in flight under this cap)."""
        return self._outstanding

    @staticmethod
    def worst_case_usd(price: ModelPrice | None, prompt_tokens: int,
                       max_output_tokens: int) -> float:
        """The most one request can cost: its prompt estimate and the whole output cap."""
        if price is None:
            return 0.0
        return price.cost_usd(prompt_tokens, max_output_tokens)

    def try_reserve(self, amount_usd: float) -> int | None:
        """Reserve `amount_usd` if it fits; the reservation (nano-dollars) or None."""
        amount = to_nano(amount_usd)
        with self._lock:
            if self._share is not None and self._spent + self._reserved + amount > self._share:
                return None
            self._reserved += amount
            self._outstanding += 1
            return amount

    async def reserve(self, amount_usd: float, stopped: Callable[[], bool]) -> int | Reservation:
        """Wait until `amount_usd` fits, then reserve it.

        Returns the reservation, Reservation.SPENT when nothing is in flight and it still does
        not fit, or Reservation.STOPPED when `stopped()` turns true while waiting (`wake` makes
        waiters look again).
        """
        condition = self._condition()
        async with condition:
            while True:
                if stopped():
                    return Reservation.STOPPED
                reservation = self.try_reserve(amount_usd)
                if reservation is not None:
                    return reservation
                if self._outstanding == 0:
                    return Reservation.SPENT
                await condition.wait()

    async def settle(self, reservation: int, actual_usd: float) -> None:
        """Replace a reservation by what the answer really cost (0 if it was not billed)."""
        with self._lock:
            self._reserved -= reservation
            self._outstanding -= 1
            self._spent += to_nano(actual_usd)
        await self.wake()

    async def wake(self) -> None:
        """Let every waiter look again (after a settlement, or when the run stops)."""
        condition = self._condition()
        async with condition:
            condition.notify_all()

    def _condition(self) -> asyncio.Condition:
        # Created on the engine loop at first use; every caller runs on that one loop.
        if self._settled is None:
            self._settled = asyncio.Condition()
        return self._settled
