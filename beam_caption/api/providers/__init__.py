"""Provider adapters: how each API is spoken, with no I/O (STYLE 16).

A provider is one module here defining `PROVIDER`, an object with the `Provider` protocol of
base.py: the request (path, headers with the key, JSON body for one image), the parsed response
(a ChatResult or one typed ApiError), and the batch wire shapes. The engine, retries, limits,
budget, dedupe, rows and batch bookkeeping are shared by all. A new provider is one new module
(found by name, no list to edit) plus its recorded samples in tests/samples/<name>/.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from beam_caption.api.providers.base import Provider
from beam_caption.errors import ConfigError

DEFAULT_PROVIDER = "openai"
_NOT_PROVIDERS = frozenset({"base"})


@functools.cache
def provider_names() -> tuple[str, ...]:
    """Every provider module's name, sorted (openai first: the default)."""
    names = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_PROVIDERS}
    return tuple(sorted(names, key=lambda n: (n != DEFAULT_PROVIDER, n)))


@functools.cache
def get_provider(name: str) -> Provider:
    """The adapter called `name` (looked up once per process: the engine asks per request);
    ConfigError naming the known ones for anything else."""
    if name not in provider_names():
        raise ConfigError(f"--provider must be one of {', '.join(provider_names())}, "
                          f"not {name!r}")
    return importlib.import_module(f"{__name__}.{name}").PROVIDER
