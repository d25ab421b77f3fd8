"""Token usage as a provider bills it, parsed in exactly one place (cost: cost/pricing.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the provider billed for one response.

    `reported` is False when the response carried no usage object at all (some self-hosted
    servers and gateways omit it): the counts are then zeros standing for "unknown", and the
    cost of such an answer is unknown too (cost/pricing.py), never silently $0.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    reported: bool = True


def _is_count(value: Any) -> bool:
    """True for a number a server could mean as a token count (0 included)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _int(value: Any) -> int:
    """A token count as int; None, junk and negatives count as 0 (servers omit or null fields)."""
    return int(value) if _is_count(value) else 0


def parse_usage(obj: Mapping | None) -> Usage:
    """The one place usage is parsed; tolerant of missing or null details and unknown fields.

    No usage object (absent, null, not an object, or one without a single readable count)
    gives `Usage(reported=False)`.
    """
    if not isinstance(obj, Mapping) or not any(
            _is_count(obj.get(k)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")):
        return Usage(reported=False)
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


def parse_anthropic_usage(obj: Mapping | None) -> Usage:
    """Anthropic Messages usage: `input_tokens` counts only the uncached part of the prompt, so
    the prompt is input + cache_creation_input_tokens + cache_read_input_tokens, of which the
    cache reads are `cached_tokens`. Cache writes are counted as plain input (they bill at 1.25x
    the input price, which the price table does not model)."""
    if not isinstance(obj, Mapping) or not any(
            _is_count(obj.get(k)) for k in ("input_tokens", "output_tokens")):
        return Usage(reported=False)
    read = _int(obj.get("cache_read_input_tokens"))
    prompt = _int(obj.get("input_tokens")) + _int(obj.get("cache_creation_input_tokens")) + read
    completion = _int(obj.get("output_tokens"))
    return Usage(prompt, completion, prompt + completion, read, 0)


def parse_gemini_usage(obj: Mapping | None) -> Usage:
    """Gemini usageMetadata: thinking (`thoughtsTokenCount`) is billed as output, so it is part
    of `completion_tokens` and reported as `reasoning_tokens`; `promptTokenCount` includes the
    context-cache hits (`cachedContentTokenCount`)."""
    if not isinstance(obj, Mapping) or not any(
            _is_count(obj.get(k)) for k in ("promptTokenCount", "candidatesTokenCount",
                                            "totalTokenCount")):
        return Usage(reported=False)
    prompt = _int(obj.get("promptTokenCount"))
    thoughts = _int(obj.get("thoughtsTokenCount"))
    completion = _int(obj.get("candidatesTokenCount")) + thoughts
    total = _int(obj.get("totalTokenCount")) or prompt + completion
    return Usage(prompt, completion, total, _int(obj.get("cachedContentTokenCount")), thoughts)
