"""The one per-process registry of shared resources, keyed by what they are for.

Beam runs many DoFn instances on several threads in one worker process; the things they share
(the engine's loop thread and session, download sessions, a run's state and journal, a fetched
secret) live here, one per key, under one lock. Two lifetimes:

- `kept(key, create)`: made once and kept for the life of the process (a run's spend share must
  survive Beam tearing DoFns down; a secret is fetched once);
- `acquire(key, create, close)` / `release(key)`: reference-counted; the last holder to release
  closes it, so one DoFn's teardown never closes a session another thread is still using.

Not apache_beam.utils.shared.Shared: it keeps only weak references, and only the most recently
acquired object stays alive (DESIGN.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Entry:
    value: Any
    refs: int  # -1: kept for the process's life
    close: Callable[[Any], None] | None


_entries: dict[Hashable, _Entry] = {}
_lock = threading.RLock()


def kept(key: Hashable, create: Callable[[], T],
         valid: Callable[[T], bool] = lambda value: True) -> T:
    """The process's resource for `key`, made by `create()` on first use and kept.

    A value `valid` rejects (a loop thread that died) is made again. If `create` raises, nothing
    is kept and the next call tries again.
    """
    with _lock:
        entry = _entries.get(key)
        if entry is None or not valid(entry.value):
            entry = _entries[key] = _Entry(create(), -1, None)
        return entry.value


def acquire(key: Hashable, create: Callable[[], T], close: Callable[[T], None]) -> T:
    """The resource for `key`, made on first use; pair every call with `release(key)`."""
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry(create(), 0, close)
        entry.refs += 1
        return entry.value


def release(key: Hashable) -> None:
    """Drop one reference to `key`'s resource; the last one closes it (outside the lock)."""
    with _lock:
        entry = _entries.get(key)
        if entry is None or entry.refs < 0:
            return
        entry.refs -= 1
        if entry.refs > 0:
            return
        del _entries[key]
    if entry.close is not None:
        entry.close(entry.value)


def find(key: Hashable) -> Any:
    """The resource for `key` if it exists in this process, else None (never creates one)."""
    with _lock:
        entry = _entries.get(key)
        return entry.value if entry is not None else None


def values(kind: str) -> Iterator[tuple[Hashable, Any]]:
    """(key, resource) for every key that is a tuple starting with `kind` (a snapshot)."""
    with _lock:
        found = [(k, e.value) for k, e in _entries.items()
                 if isinstance(k, tuple) and k and k[0] == kind]
    return iter(found)


def forget(key: Hashable) -> None:
    """Drop a kept resource without closing it (tests that swap a dependency)."""
    with _lock:
        _entries.pop(key, None)
