"""The secrets this process knows (the API keys it resolved), and masking them in any text.

A misbehaving server may echo the key it received ("Incorrect API key provided: ..."): error
messages pass through `mask_secrets` before they reach a row, a log line or an exception, so the
exact key is masked whatever its shape (api/response.py also masks anything shaped like a key).
"""

from __future__ import annotations

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 8  # shorter values would mask ordinary words
_KNOWN: set[str] = set()


def remember_secret(secret: str) -> None:
    """Mask `secret` in every text `mask_secrets` sees from now on (in this process)."""
    if len(secret) >= MIN_SECRET_CHARS:
        _KNOWN.add(secret)


def mask_secrets(text: str) -> str:
    """`text` with every remembered secret replaced by REDACTED."""
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
