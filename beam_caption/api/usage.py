"""Token usage as a provider bills it, parsed in exactly one place (cost: cost/pricing.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Tokens the provider billed for one response."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def _int(value: Any) -> int:
    """A token count as int; None, junk and negatives count as 0 (servers omit or null fields)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float) and math.isfinite(value):
        return max(0, int(value))
    return 0


def parse_usage(obj: Mapping | None) -> Usage:
    """The one place usage is parsed; tolerant of missing or null details."""
    if not isinstance(obj, Mapping):
        return Usage()
    prompt = _int(obj.get("prompt_tokens"))
    completion = _int(obj.get("completion_tokens"))
    prompt_details = obj.get("prompt_tokens_details")
    completion_details = obj.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
    if not cached:
        # DeepSeek-style servers report cache hits at the top level instead.
        cached = _int(obj.get("prompt_cache_hit_tokens"))
    reasoning = (_int(completion_details.get("reasoning_tokens"))
                 if isinstance(completion_details, Mapping) else 0)
    total = _int(obj.get("total_tokens")) or prompt + completion
    return Usage(prompt, completion, total, cached, reasoning)
