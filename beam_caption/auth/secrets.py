"""The API key from Google Secret Manager, fetched on the worker and cached per process.

On Dataflow the key must not be a pipeline option (the console shows every option) nor an
environment variable (workers do not inherit the launcher's). `--api-key-secret` names a secret
version; each worker process reads it once, in DoFn.setup via keys.resolve_api_key, with the
worker's service account (it needs roles/secretmanager.secretAccessor on the secret).

google-cloud-secret-manager is imported only here and only when a secret is asked for (the
`secrets` extra; apache-beam[gcp] also brings it). Before a remote job is submitted, the launcher
reads it once (`check_secret_access`) and discards it. Tests replace the client through
`use_client_factory`, the one seam. Error messages name the secret, never its value.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from beam_caption import resources
from beam_caption.api.errors import ApiError, RateLimited, ServerError
from beam_caption.api.retry import call_with_retries
from beam_caption.errors import ConfigError

# projects/P/secrets/S/versions/V; the version may be omitted (means "latest").
SECRET_NAME_PATTERN = r"^projects/[^/\s]+/secrets/[^/\s]+(/versions/[^/\s]+)?$"
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
_TIMEOUT_S = 30.0


class SecretClient(Protocol):
    """The part of secretmanager.SecretManagerServiceClient this module uses."""

    def access_secret_version(self, request: dict[str, str], timeout: float,
                              retry: Any = None) -> Any:
        """Return an AccessSecretVersionResponse (`.payload.data` holds the bytes)."""


ClientFactory = Callable[[], SecretClient]

_factory: ClientFactory | None = None


def secret_version_name(name: str) -> str:
    """`name` as a full version resource name; raises ConfigError when malformed."""
    name = name.strip()
    if not _SECRET_NAME.match(name):
        raise ConfigError(f"--api-key-secret must look like projects/PROJECT/secrets/NAME"
                          f"/versions/VERSION, got {name!r}")
    return name if "/versions/" in name else name + "/versions/latest"


def fetch_secret(name: str) -> str:
    """The secret's text (stripped), read once per process and then served from memory.

    Raises ConfigError, with a message safe to show, when the secret is missing, forbidden,
    empty or the client library is not installed. Failures are not cached.
    """
    version = secret_version_name(name)
    # Kept in the process registry, whose lock is held while it is read: DoFn instances set up
    # on many threads at once cause one Secret Manager call per process, not one per thread.
    return resources.kept(("secret", version), lambda: _read(version))


def check_secret_access(name: str) -> None:
    """Read the secret once from this machine and discard it: the launcher's check before a
    remote job is submitted, so a typo, a missing version or a missing grant fails here, in one
    line, instead of on every worker after they have started. Raises ConfigError.

    The value is not cached (workers read it themselves) and never appears in the message. It is
    read with this machine's credentials; for a Flex Template the launcher VM runs as the workers'
    service account, so that is the account the check proves.
    """
    version = secret_version_name(name)
    try:
        _read(version)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (checked before submitting the job)") from None


def _read(version: str) -> str:
    client = (_factory or _default_client)()
    try:
        # google-api-core's own retry is off (retry=None): beam-caption's one retry layer,
        # with the engine's predicate and backoff, decides.
        response = call_with_retries(
            lambda: client.access_secret_version(request={"name": version},
                                                 timeout=_TIMEOUT_S, retry=None),
            what=f"reading secret {version}", max_attempts=4, classify=_as_api_error,
            sleep=_sleep)
    except Exception as exc:  # google.api_core errors; mapped to one safe line
        raise ConfigError(_describe_failure(version, exc)) from None
    try:
        text = bytes(response.payload.data).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"secret {version} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"secret {version} is empty")
    return text


def _as_api_error(exc: Exception) -> ApiError | None:
    """google.api_core errors carry their HTTP status in `code`: 429/5xx/408 are transient."""
    status = getattr(exc, "code", None)
    if not isinstance(status, int) or isinstance(status, bool):
        return None
    kind = RateLimited if status == 429 else ServerError if status >= 500 else ApiError
    return kind(f"{type(exc).__name__}", status=status)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _describe_failure(version: str, exc: Exception) -> str:
    """One line about a failed access: the kind of failure, never the server's full text."""
    kind = type(exc).__name__
    if kind == "NotFound":
        return f"secret {version} not found (check the project, name and version)"
    if kind in ("PermissionDenied", "Forbidden"):
        return (f"no permission to read secret {version}: grant the Dataflow worker service "
                "account roles/secretmanager.secretAccessor on it")
    if kind in ("Unauthenticated", "DefaultCredentialsError", "RefreshError"):
        return f"cannot read secret {version}: no Google Cloud credentials ({kind})"
    return f"cannot read secret {version} ({kind})"


def _default_client() -> SecretClient:
    try:
        from google.cloud import secretmanager
    except ImportError:
        raise ConfigError("--api-key-secret needs google-cloud-secret-manager: "
                          "pip install 'beam-caption[secrets]'") from None
    return secretmanager.SecretManagerServiceClient()


@contextlib.contextmanager
def use_client_factory(factory: ClientFactory) -> Iterator[None]:
    """Within the block, build Secret Manager clients with `factory` (the test seam).

    The per-process cache is emptied on entry and on exit, so nothing fetched through a fake
    client outlives the block.
    """
    global _factory
    previous, _factory = _factory, factory
    _forget_secrets()
    try:
        yield
    finally:
        _factory = previous
        _forget_secrets()


def _forget_secrets() -> None:
    for key, _ in resources.values("secret"):
        resources.forget(key)
