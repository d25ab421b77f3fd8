"""SimulatorConfig: every option of the simulator, validated once, in one frozen object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from beam_caption.errors import ConfigError

# Fault kinds in the order a request's single random draw is matched against them.
FAULT_FIELDS = ("rate_429", "rate_500", "rate_503", "rate_timeout", "rate_disconnect",
                "rate_broken_json", "rate_quota", "rate_content_filter")

# What POST /_sim/config may change while the server runs. Host, port, models, prices, the log
# file and the batch limits are fixed at start: changing them would invalidate state.
RUNTIME_FIELDS = frozenset((*FAULT_FIELDS, "api_key", "rpm", "tpm", "window_seconds",
                            "latency_ms", "latency_sigma", "per_output_token_ms",
                            "max_concurrency", "hang_seconds", "batch_seconds",
                            "batch_expire_rate", "seed", "ignore_json_prompts"))


@dataclass(frozen=True)
class SimulatorConfig:
    """Options of the local OpenAI-compatible simulator; the defaults are a fast, perfect server.

    Zero means "off" for rpm, tpm and max_concurrency; api_key None accepts any (or no) key.
    Fault rates are probabilities per chat request (their sum must not exceed 1).
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    models: tuple[str, ...] = ()  # served in addition to every model of the price table
    latency_ms: float = 0.0  # median time to first byte of a chat answer
    latency_sigma: float = 0.25  # log-normal spread of that latency (sigma of ln)
    per_output_token_ms: float = 0.0  # generation time added per completion token
    max_concurrency: int = 0  # requests served at once; beyond it they queue
    rpm: int = 0
    tpm: int = 0
    window_seconds: float = 60.0  # the sliding window of rpm/tpm (tests shorten it)
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_timeout: float = 0.0
    rate_disconnect: float = 0.0
    rate_broken_json: float = 0.0
    rate_quota: float = 0.0
    rate_content_filter: float = 0.0
    hang_seconds: float = 600.0  # how long a "timeout" fault hangs before dropping the connection
    seed: int = 0
    batch_seconds: float = 2.0  # validating -> completed for one batch
    batch_max_lines: int = 50_000
    batch_max_bytes: int = 200 * 1024 * 1024
    # Share of batch lines (seeded draw) not run before the completion window "expires": they go
    # to the error file as batch_expired and the batch ends with status "expired".
    batch_expire_rate: float = 0.0
    # A prompt that asks for JSON valid against a quoted schema (--schema-mode prompt) is
    # answered with such JSON, as an instruction-following model would; True plays one that
    # ignores the instruction and answers prose.
    ignore_json_prompts: bool = False
    log_path: str | None = None
    prices_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        _check_config(self)

    def replace(self, **changes: Any) -> SimulatorConfig:
        """A copy with `changes` applied (validated; unknown names raise ConfigError)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown simulator option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the subprocess runner ships the config this way)."""
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatorConfig:
        """The inverse of to_dict; unknown keys raise ConfigError."""
        return cls().replace(**data)

    @property
    def fault_rates(self) -> dict[str, float]:
        """Fault name (the field name without `rate_`) -> probability, in draw order."""
        return {name[len("rate_"):]: getattr(self, name) for name in FAULT_FIELDS}


def _check_config(cfg: SimulatorConfig) -> None:
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"port must be 0..65535, got {cfg.port}")
    for name in ("latency_ms", "latency_sigma", "per_output_token_ms", "hang_seconds",
                 "batch_seconds"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must not be negative")
    for name in ("max_concurrency", "rpm", "tpm"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must not be negative (0 means unlimited)")
    if cfg.window_seconds <= 0:
        raise ConfigError("window_seconds must be positive")
    if cfg.batch_max_lines < 1 or cfg.batch_max_bytes < 1:
        raise ConfigError("batch_max_lines and batch_max_bytes must be positive")
    if not 0 <= cfg.batch_expire_rate <= 1:
        raise ConfigError("batch_expire_rate must be within 0..1")
    rates = cfg.fault_rates
    bad = [k for k, v in rates.items() if not 0 <= v <= 1]
    if bad:
        raise ConfigError(f"fault rates must be within 0..1: {', '.join(bad)}")
    if sum(rates.values()) > 1 + 1e-9:
        raise ConfigError("the fault rates add up to more than 1")
    if cfg.api_key is not None and not cfg.api_key:
        raise ConfigError("api_key must be non-empty (or None to accept any key)")
