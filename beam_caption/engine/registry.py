"""The per-process engine registry: every CaptionImages DoFn in a worker process shares one engine.

Reference-counted in the process registry (engine/resources.py): the last DoFn to leave closes
the engine's session. Nothing a run must remember lives in an engine (see
run_state.py), so closing one and starting another later loses no spend share and no answer.
"""

from __future__ import annotations

from beam_caption.auth.keys import resolve_api_key
from beam_caption.config import CaptionConfig
from beam_caption.engine import resources
from beam_caption.engine.engine import AsyncEngine
from beam_caption.engine.loop import get_loop_thread


def acquire_engine(config: CaptionConfig) -> AsyncEngine:
    """The process's engine for `config`, created on first use; pair with release_engine."""

    def create() -> AsyncEngine:
        endpoint = config.endpoint
        api_key = resolve_api_key(endpoint.api_key_env, endpoint.api_key_file,
                                  endpoint.api_key_secret)
        engine = AsyncEngine(endpoint, config.limits, get_loop_thread("engine"), api_key)
        engine.open()
        return engine

    return resources.acquire(("engine", config.engine_key()), create, AsyncEngine.close)


def release_engine(config: CaptionConfig) -> None:
    """Drop one reference; the last one closes the engine's session."""
    resources.release(("engine", config.engine_key()))


def live_engine(config: CaptionConfig) -> AsyncEngine | None:
    """The engine for `config` if one is open in this process (tests look)."""
    return resources.find(("engine", config.engine_key()))
