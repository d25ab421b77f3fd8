"""What an engine is built from: where requests go (never the key) and the limits it keeps."""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def chat_completions_url(self) -> str:
        """The chat completions endpoint under base_url."""
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass(frozen=True)
class LimitsConfig:
    """Per-process request engine limits (global limits already divided by `workers`)."""

    concurrency: int = 32
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

    @property
    def rpm_per_worker(self) -> float:
        """This process's share of the account's requests-per-minute limit."""
        return self.rpm / self.workers if self.rpm else 0.0

    @property
    def tpm_per_worker(self) -> float:
        """This process's share of the account's tokens-per-minute limit."""
        return self.tpm / self.workers if self.tpm else 0.0
