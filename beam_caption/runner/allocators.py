"""Allocators that keep a long local run's memory flat: set once per process, before the run.

Measured (10,000 vs 1,000 small images, tree peak RSS, bench/ANALYSIS.md "Peak RSS"): each worker
process grew ~24 MB per 5,000 images although Python traced only a few MB more. Most of it was
Arrow's default allocator (mimalloc in the pyarrow wheels), which keeps the pages of every record
batch the Parquet sink built and freed; Arrow's system pool (glibc malloc) gives them back. glibc
itself makes up to 8 malloc arenas per core for the worker's threads (the Beam thread, the
engine's loop, gRPC's), each fragmenting on its own; two are enough for these few threads.
Neither costs time (side by side, three runs each: within noise).

A user's own ARROW_DEFAULT_MEMORY_POOL or MALLOC_ARENA_MAX wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys

_LOG = logging.getLogger(__name__)
_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
ARENAS = 2
_settled = False


def settle_allocators() -> None:
    """Arrow's system memory pool and at most ARENAS glibc malloc arenas, in this process and
    the worker processes it forks or starts. Call it before pyarrow is imported: Arrow's C++
    code (the Parquet writer's buffers) picks its pool once, from the environment. Idempotent;
    never raises (another libc or platform: left as is)."""
    global _settled
    if _settled:
        return
    _settled = True
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # inherited by every worker
        if "pyarrow" in sys.modules:  # too late for C++; pyarrow's own calls still follow
            with contextlib.suppress(Exception):
                pa = sys.modules["pyarrow"]
                pa.set_memory_pool(pa.system_memory_pool())
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # not glibc (musl has no mallopt arenas)
            # The symbols already loaded (dlopen(NULL)), not ctypes.util.find_library: that
            # runs `ldconfig -p` in a child process, in every worker, at start-up.
            libc = ctypes.CDLL(None)
            if libc.mallopt(_M_ARENA_MAX, ARENAS) != 1:
                _LOG.debug("mallopt(M_ARENA_MAX) refused")
