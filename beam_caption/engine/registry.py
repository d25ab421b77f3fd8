"""The per-process engine registry: every CaptionImages DoFn in a worker process shares one engine.

Reference-counted in the process registry (resources.py): the last DoFn to leave closes
the engine's session. Nothing a run must remember lives in an engine (see
run_state.py), so closing one and starting another later loses no spend share and no answer.
"""

from __future__ import annotations

from collections.abc import Hashable

from beam_caption import resources
from beam_caption.auth.keys import resolve_api_key
from beam_caption.engine.engine import AsyncEngine
from beam_caption.engine.loop import get_loop_thread
from beam_caption.engine.settings import EndpointConfig, LimitsConfig


def acquire_engine(endpoint: EndpointConfig, limits: LimitsConfig,
                   key: Hashable) -> AsyncEngine:
    """The process's engine for `key` (CaptionConfig.engine_key: endpoint, limits, model),
    created on first use from `endpoint` and `limits`; pair with release_engine(key)."""

    def create() -> AsyncEngine:
        api_key = resolve_api_key(endpoint.api_key_env, endpoint.api_key_file,
                                  endpoint.api_key_secret)
        engine = AsyncEngine(endpoint, limits, get_loop_thread("engine"), api_key)
        engine.open()
        return engine

    return resources.acquire(("engine", key), create, AsyncEngine.close)


def release_engine(key: Hashable) -> None:
    """Drop one reference; the last one closes the engine's session."""
    resources.release(("engine", key))


def live_engine(key: Hashable) -> AsyncEngine | None:
    """The engine for `key` if one is open in this process (tests look)."""
    return resources.find(("engine", key))
