"""What an engine is built from: where requests go (never the key), the limits it keeps, and
where the job-wide rate-limit service is (--rate-limiter)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from beam_caption.api.providers import DEFAULT_PROVIDER, get_provider
from beam_caption.api.providers.base import Provider
from beam_caption.engine.window import AUTO_MAX, AUTO_START
from beam_caption.errors import ConfigError
from beam_caption.options import DEFAULT_BASE_URL

# The rate-limit service's domain when --rate-limiter names none.
DEFAULT_DOMAIN = "beam-caption"


@dataclass(frozen=True)
class EndpointConfig:
    """Where requests go and where the key is found (never the key itself)."""

    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: str | None = None
    # A Secret Manager version name (not the key): read on the worker (beam_caption.auth.secrets).
    api_key_secret: str | None = None
    request_timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    # Which API base_url speaks (api/providers/): how requests are built, sent and read.
    provider: str = DEFAULT_PROVIDER

    @property
    def chat_completions_url(self) -> str:
        """The chat completions endpoint under base_url."""
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def adapter(self) -> Provider:
        """The provider adapter this endpoint speaks."""
        return get_provider(self.provider)

    def request_url(self, model: str) -> str:
        """The realtime endpoint for `model` under base_url (Gemini's path names the model)."""
        return self.base_url.rstrip("/") + self.adapter.request_path(model)


@dataclass(frozen=True)
class LimitsConfig:
    """Per-process request engine limits: the account's --rpm/--tpm, shared by `workers`
    processes (divided by them, or, with `rate_limiter`, enforced for the whole job)."""

    concurrency: int = 0  # requests in flight per process; 0: sized from measurements
    rpm: float = 0.0
    tpm: float = 0.0
    workers: int = 1
    max_attempts: int = 6
    retry_deadline_s: float = 900.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    # A terminal error (bad key, no quota, a 400 every image gets) stops the run after this many
    # consecutive identical failures with no success in between.
    abort_after_identical_failures: int = 8
    # envoy://HOST:PORT[/DOMAIN]: --rpm/--tpm enforced by a shared rate-limit service, not divided.
    rate_limiter: str | None = None
    # Where `workers` came from ("--workers-hint", the runner's options), for the log line that
    # says what the static division assumes; None when nobody said.
    workers_source: str | None = None

    @property
    def auto_window(self) -> bool:
        """True when the in-flight window is sized from measurements (engine/window.py)."""
        return self.concurrency == 0

    @property
    def start_window(self) -> int:
        """The in-flight limit a process starts with."""
        return self.concurrency or AUTO_START

    @property
    def max_window(self) -> int:
        """The most requests a process may ever have in flight (its connection pool)."""
        return self.concurrency or AUTO_MAX

    def __post_init__(self) -> None:
        if self.rate_limiter is not None:
            limiter_address(self.rate_limiter)  # a typo fails in the launcher, not on workers
            if not (self.rpm or self.tpm):
                raise ConfigError("--rate-limiter shares --rpm/--tpm across the workers: give "
                                  "--rpm or --tpm too")

    @property
    def rpm_per_worker(self) -> float:
        """This process's share of the account's requests-per-minute limit (all of it when a
        rate-limit service enforces the limit for the whole job)."""
        return self.rpm / self._divisor if self.rpm else 0.0

    @property
    def tpm_per_worker(self) -> float:
        """This process's share of the account's tokens-per-minute limit (all of it when a
        rate-limit service enforces the limit for the whole job)."""
        return self.tpm / self._divisor if self.tpm else 0.0

    @property
    def _divisor(self) -> int:
        # With a global limiter no process may use more than the whole limit, but any one may
        # use all of it: the service, not a static share, keeps the sum under the limit.
        return 1 if self.rate_limiter else self.workers


@dataclass(frozen=True)
class LimiterAddress:
    """Where the Envoy rate-limit service listens, and the domain its rules live in."""

    host: str
    port: int
    domain: str = DEFAULT_DOMAIN

    @property
    def target(self) -> str:
        """HOST:PORT as gRPC spells it (IPv6 hosts in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"envoy://{self.target}/{self.domain}"


def limiter_address(url: str) -> LimiterAddress:
    """Parse --rate-limiter envoy://HOST:PORT[/DOMAIN]; ConfigError when it is not one."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    domain = parts.path.strip("/")
    if parts.scheme != "envoy" or not parts.hostname or port is None or "/" in domain \
            or parts.query or parts.fragment:
        raise ConfigError(f"--rate-limiter {url!r} is not envoy://HOST:PORT[/DOMAIN] "
                          "(an Envoy rate-limit service's gRPC address)")
    return LimiterAddress(parts.hostname, port, domain or DEFAULT_DOMAIN)


def resolve_base_url(flag_value: str | None, provider: str = DEFAULT_PROVIDER) -> str:
    """The endpoint: the flag, else the provider's variable as its official SDK reads it
    ($OPENAI_BASE_URL, $ANTHROPIC_BASE_URL, $GEMINI_BASE_URL), else the provider's own API."""
    adapter = get_provider(provider)
    default = DEFAULT_BASE_URL if provider == DEFAULT_PROVIDER else adapter.default_base_url
    url = flag_value or os.environ.get(adapter.base_url_env) or default
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--base-url must start with http:// or https://, got {url!r}")
    if urlsplit(url).query or urlsplit(url).fragment:
        # A key in ?key=... would travel like credentials; paths are joined after it anyway.
        raise ConfigError("--base-url must not hold a query string or fragment (?... #...): "
                          "pass the key with --api-key-env, --api-key-file or --api-key-secret")
    if "@" in urlsplit(url).netloc:
        # USER:KEY@HOST would travel into run-summary.json, batches.json and templates; the
        # message names neither part.
        raise ConfigError("--base-url must not hold credentials (USER:PASSWORD@HOST): pass the "
                          "key with --api-key-env, --api-key-file or --api-key-secret")
    return url.rstrip("/")
