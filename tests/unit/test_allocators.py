"""runner/allocators.py: Arrow's system pool in a local run's processes, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("from beam_caption.runner.allocators import settle_allocators; settle_allocators(); "
         "settle_allocators(); import pyarrow as pa; print(pa.default_memory_pool().backend_name)")


def _backend(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def test_a_local_run_uses_arrows_system_pool() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    assert _backend(env) == "system"


@pytest.mark.parametrize("pool", ["jemalloc", "mimalloc"])
def test_the_users_own_pool_wins(pool: str) -> None:
    import pyarrow as pa

    available = {"jemalloc": pa.jemalloc_memory_pool, "mimalloc": pa.mimalloc_memory_pool}
    try:
        available[pool]()
    except NotImplementedError:
        pytest.skip(f"this pyarrow has no {pool}")
    assert _backend({**os.environ, "ARROW_DEFAULT_MEMORY_POOL": pool}) == pool
