"""SimState: everything one running simulator holds (config, prices, ledger, limiter, randomness).

Created once per app; handlers reach it as request.app[STATE]. All of it lives on the app's one
event loop, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import math
import random

import aiohttp
from aiohttp import web

from beam_caption.cost.pricing import ModelPrice, load_prices
from beam_caption.simulator.apierror import SimError
from beam_caption.simulator.ledger import Ledger, RequestLog
from beam_caption.simulator.ratelimit import RateLimiter
from beam_caption.simulator.settings import RUNTIME_FIELDS, SimulatorConfig


class SimState:
    """The mutable state of one simulator instance."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        # Parsed once: nothing on the request path reads files.
        self.prices: dict[str, ModelPrice] = load_prices(config.prices_path)
        self.models = frozenset(self.prices) | frozenset(config.models)
        self.ledger = Ledger(self.prices)
        self.log = RequestLog(config.log_path)
        self.limiter = RateLimiter(config.rpm, config.tpm, config.window_seconds)
        self.semaphore: asyncio.Semaphore | None = None
        self.http: aiohttp.ClientSession | None = None
        self._seed(config.seed)
        self._apply_concurrency()

    def _seed(self, seed: int) -> None:
        # Separate streams, so enabling latency does not change which requests fail.
        self.fault_rng = random.Random(f"faults-{seed}")
        self.latency_rng = random.Random(f"latency-{seed}")
        self.batch_rng = random.Random(f"batch-{seed}")

    def _apply_concurrency(self) -> None:
        n = self.config.max_concurrency
        self.semaphore = asyncio.Semaphore(n) if n else None

    def update(self, changes: dict[str, object]) -> SimulatorConfig:
        """Apply runtime changes (POST /_sim/config); 400 for fields fixed at start."""
        fixed = sorted(set(changes) - RUNTIME_FIELDS)
        if fixed:
            raise SimError(400, f"cannot change at runtime: {', '.join(fixed)}",
                           param=fixed[0], code="invalid_value")
        self.config = self.config.replace(**changes)
        cfg = self.config
        self.limiter.reconfigure(cfg.rpm, cfg.tpm, cfg.window_seconds)
        if "seed" in changes:
            self._seed(cfg.seed)
        if "max_concurrency" in changes:
            self._apply_concurrency()
        return cfg

    def is_reasoning(self, model: str) -> bool:
        """The price table's reasoning flag for `model` (False for unlisted models)."""
        price = self.prices.get(model)
        return bool(price and price.reasoning)

    def draw_fault(self) -> str | None:
        """One seeded draw: the fault this request suffers, or None."""
        rates = self.config.fault_rates
        if not any(rates.values()):
            return None
        x = self.fault_rng.random()
        for name, rate in rates.items():
            if x < rate:
                return name
            x -= rate
        return None

    def latency_s(self, completion_tokens: int) -> float:
        """Seconds until the answer: log-normal around the median, plus per-token time."""
        cfg = self.config
        base = 0.0
        if cfg.latency_ms:
            base = cfg.latency_ms * math.exp(cfg.latency_sigma * self.latency_rng.gauss(0, 1))
        return (base + cfg.per_output_token_ms * completion_tokens) / 1000

    async def http_session(self) -> aiohttp.ClientSession:
        """The session image URLs are fetched with (loopback only; created on first use)."""
        if self.http is None:
            self.http = aiohttp.ClientSession(trust_env=False,
                                              timeout=aiohttp.ClientTimeout(total=10))
        return self.http

    async def close(self) -> None:
        """Release the log file and the HTTP session."""
        self.log.close()
        if self.http is not None:
            await self.http.close()
            self.http = None


STATE = web.AppKey("sim_state", SimState)
