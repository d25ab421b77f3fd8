"""The per-process engine registry: every CaptionImages DoFn in a worker process shares one engine.

A module-level dict under a lock, not apache_beam.utils.shared.Shared: Shared keeps only weak
references and only the most recently acquired object alive (DESIGN.md). Reference counts let the
last DoFn to leave close the engine's session. Nothing a run must remember lives in an engine (see
run_state.py), so closing one and starting another later loses no spend share and no answer.
"""

from __future__ import annotations

import threading

from beam_caption.auth.keys import resolve_api_key
from beam_caption.config import CaptionConfig
from beam_caption.engine.engine import AsyncEngine
from beam_caption.engine.loop import get_loop_thread

_engines: dict[tuple[object, ...], tuple[AsyncEngine, int]] = {}
_keys: dict[int, tuple[object, ...]] = {}  # id(engine) -> its registry key
_engines_lock = threading.Lock()


def acquire_engine(config: CaptionConfig) -> AsyncEngine:
    """The process's engine for `config`, created on first use; pair with release_engine."""
    key = config.engine_key()
    with _engines_lock:
        entry = _engines.get(key)
        if entry is None:
            api_key = resolve_api_key(config.endpoint.api_key_env, config.endpoint.api_key_file,
                                      config.endpoint.api_key_secret)
            engine = AsyncEngine(config.endpoint, config.limits, get_loop_thread("engine"),
                                 api_key)
            engine.open()
            entry = (engine, 0)
        engine, refs = entry
        _engines[key] = (engine, refs + 1)
        _keys[id(engine)] = key
        return engine


def release_engine(engine: AsyncEngine) -> None:
    """Drop one reference; the last one closes the engine's session."""
    with _engines_lock:
        key = _keys.get(id(engine))
        entry = _engines.get(key) if key is not None else None
        if entry is None or entry[0] is not engine:
            return
        refs = entry[1] - 1
        if refs > 0:
            _engines[key] = (engine, refs)
            return
        del _engines[key]
        del _keys[id(engine)]
    engine.close()
