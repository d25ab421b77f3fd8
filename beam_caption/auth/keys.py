"""Find the API key on the worker, and keep it out of every log line.

The key is never a pipeline option or a config field (Dataflow shows options in its UI): the config
says where to look (an environment variable name or a file), and the worker reads it in setup.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from beam_caption import resources
from beam_caption.auth.secrets import fetch_secret
from beam_caption.errors import ConfigError
from beam_caption.loopback import is_loopback_url
from beam_caption.redaction import MIN_SECRET_CHARS, REDACTED, remember_secret

_REDACTED = REDACTED


class RedactingFilter(logging.Filter):
    """Replaces a secret in every log record's message and arguments."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; always keep it."""
        message = record.getMessage()
        if self._secret in message:
            record.msg = message.replace(self._secret, _REDACTED)
            record.args = None
        return True


def redact_in_logs(secret: str) -> None:
    """Install a redacting filter for `secret` on the root logger's handlers, once per process;
    error messages mask it too (redaction.py)."""
    if len(secret) < MIN_SECRET_CHARS:
        return  # too short to redact without mangling ordinary words
    remember_secret(secret)
    resources.kept(("redaction", secret), lambda: _install(secret))


def _install(secret: str) -> bool:
    root = logging.getLogger()
    root.addFilter(RedactingFilter(secret))
    for handler in root.handlers:
        handler.addFilter(RedactingFilter(secret))
    return True


def resolve_api_key(env_name: str, key_file: str | None,
                    secret_name: str | None = None) -> str | None:
    """The API key from Secret Manager if `secret_name` is given, else from `key_file` (first
    line), else from the environment; or None. Secrets are cached per process (auth/secrets.py)."""
    if secret_name:
        key = fetch_secret(secret_name)
    elif key_file:
        path = Path(key_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            # A value with no "/" or "." is more likely the key itself, passed by mistake.
            shown = key_file if "/" in key_file or "." in key_file else "(the value given)"
            raise ConfigError(f"cannot read --api-key-file {shown}: {exc.strerror}") from None
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise ConfigError(f"--api-key-file {key_file} is empty")
    else:
        key = os.environ.get(env_name, "").strip()
        if not key:
            return None
    redact_in_logs(key)
    return key


def require_api_key(base_url: str, env_name: str, key_file: str | None = None,
                    secret_name: str | None = None) -> str | None:
    """The key as resolve_api_key finds it; a ConfigError (the one "no API key" message) when a
    remote endpoint would get none. A loopback endpoint (a simulator, a local server) needs none."""
    key = resolve_api_key(env_name, key_file, secret_name)
    if key is None and not is_loopback_url(base_url):
        raise ConfigError(f"no API key: set {env_name} (or use --api-key-file / --api-key-secret) "
                          f"for {base_url}")
    return key
