"""Usage accounting by the published rules, through beam_caption.cost.tokens (the shared estimator).

prompt_tokens = text estimate of every message (plus per-message overhead) + each image's tokens
under the model's rule at its own detail. completion_tokens = the text estimate of the answer,
per choice. The simulator keeps no prompt cache, so cached_tokens is always 0 (but present);
it does not simulate hidden reasoning, so reasoning_tokens is 0 (but present).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beam_caption.cost import tokens
from beam_caption.simulator.image_parts import ImageFacts

# Without a price-table rule (a model added with --model), images count as 32 px patches at
# multiplier 1, as beam_caption.cost.tokens.chat_prompt_tokens estimates them.
FALLBACK_RULE = {"rule": "patch", "patch_px": tokens.DEFAULT_PATCH_PX,
                 "budget": tokens.DEFAULT_PATCH_BUDGET, "multiplier": 1.0}


@dataclass(frozen=True)
class Answer:
    """One choice's content after the max-tokens cut, and why generation stopped."""

    content: str
    completion_tokens: int
    finish_reason: str  # stop | length


def prompt_tokens(rule: Mapping[str, Any] | None, texts: tuple[str, ...], n_messages: int,
                  images: list[tuple[ImageFacts, str]]) -> int:
    """Prompt tokens of a request: texts and overhead, plus each (image, detail)."""
    image_rule = rule or FALLBACK_RULE
    return tokens.messages_text_tokens(list(texts), n_messages) + sum(
        tokens.image_tokens(image_rule, facts.width, facts.height, detail)
        for facts, detail in images)


def cut_answer(text: str, limit: int | None) -> Answer:
    """`text` as generated within `limit` completion tokens (None = no limit).

    Over the limit the answer stops mid-way, as a real model does: the content keeps the first
    `limit` tokens' worth of bytes and finish_reason is "length" (JSON answers become invalid).
    """
    used = tokens.text_tokens(text)
    if limit is None or used <= limit:
        return Answer(text, used, "stop")
    cut = text.encode("utf-8")[: limit * tokens.BYTES_PER_TOKEN].decode("utf-8", "ignore")
    return Answer(cut, limit, "length")


def usage_body(prompt: int, completion: int, cached: int = 0,
               reasoning: int = 0) -> dict[str, Any]:
    """The `usage` object of a chat completion, with the detail objects the API always sends."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }
