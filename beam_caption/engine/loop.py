"""A per-process background asyncio loop, shared by every DoFn instance and thread in a worker.

Beam runs DoFns on several threads per worker process; aiohttp wants one event loop. Each process
gets one daemon thread running one loop per name, created lazily and kept for the process
(resources.py).
Callers hand it coroutines and get concurrent.futures.Future objects back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from beam_caption import resources

T = TypeVar("T")


class LoopThread:
    """One asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"beam-caption-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def is_alive(self) -> bool:
        """True while the loop thread runs."""
        return self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and block the calling (non-loop) thread for its result."""
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        """Stop the loop and join the thread; pending tasks are cancelled."""
        if not self.loop.is_running():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # best effort at shutdown
            self.submit(_cancel_all()).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def get_loop_thread(name: str = "default") -> LoopThread:
    """The process-wide loop thread called `name`, started on first use (again if it died)."""
    return resources.kept(("loop", name), lambda: LoopThread(name), LoopThread.is_alive)
