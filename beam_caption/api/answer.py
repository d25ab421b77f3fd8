"""What one choice of a chat completion says, with no I/O: the caption text, a refusal, and why
generation stopped, read the same way whichever server sent it.

Servers differ in where they put a reasoning model's thinking: a separate `reasoning` or
`reasoning_content` field (vLLM, llama.cpp, Ollama, OpenRouter: never read here, so it cannot
leak into a caption), a `<think>...</think>` block at the start of `content` (local servers
without a reasoning parser), or a "thinking" part of a content list (Mistral). They differ in
finish reasons too ("eos_token", "end_turn", "max_tokens"), which are mapped to OpenAI's.
api/response.py decides what the answer is worth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Finish reasons of other servers and of providers passed through by gateways, in OpenAI's terms,
# so `finish_reason = 'length'` finds every cut-off caption whoever answered.
_FINISH_REASONS = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "eos": "stop",
    "eos_token": "stop",
    "length": "length", "max_tokens": "length",
    "content_filter": "content_filter", "refusal": "refusal",
    "error": "error", "abort": "error",
}
# Content-list parts that hold answer text; "thinking", "reasoning" and the rest are not.
_TEXT_PARTS = frozenset({"text", "output_text"})
# A reasoning block at the very start of the content; `<thinking>` is the spelling of some
# fine-tunes. The closing tag is searched separately: it may be missing (cut off).
_OPENING = re.compile(r"\A\s*<(think|thinking)>", re.IGNORECASE)
_CLOSING_ONLY = re.compile(r"</think>", re.IGNORECASE)
# Models emit one block, some an empty one first; more than this is no answer's shape.
_MAX_BLOCKS = 8


@dataclass(frozen=True)
class Answer:
    """One choice, read: `text` is the caption ("" when there is none)."""

    text: str
    refusal: str | None
    finish_reason: str | None
    reasoning_set_aside: bool  # a <think> block was removed (or was all there was)


def finish_reason(value: Any) -> str | None:
    """`value` in OpenAI's terms (stop, length, content_filter, ...), lower-cased; an unknown
    reason is kept as sent; anything but a non-empty string is None."""
    if not isinstance(value, str) or not value.strip():
        return None
    reason = value.strip().lower()
    return _FINISH_REASONS.get(reason, reason)


def strip_reasoning(text: str) -> tuple[str, bool]:
    """(`text` without its leading reasoning blocks, whether there were any), stripped.

    An unterminated block (the output cap struck mid-thought) is all reasoning: "". Chat
    templates that open the block in the prompt (DeepSeek-R1, QwQ) leave only a closing
    `</think>` in the answer: what precedes it is reasoning too.
    """
    found = False
    for _ in range(_MAX_BLOCKS):  # bounded: a hostile body must not cost quadratic time
        opening = _OPENING.match(text)
        if opening is None:
            break
        found = True
        closing = re.search(rf"</{opening.group(1)}\s*>", text[opening.end():], re.IGNORECASE)
        if closing is None:
            return "", True
        text = text[opening.end() + closing.end():]
    else:
        if _OPENING.match(text):
            return "", True  # block after block: nothing here is a caption
    closing_only = None if found else _CLOSING_ONLY.search(text)
    if closing_only is not None and "<think" not in text[:closing_only.start()].lower():
        return text[closing_only.end():].strip(), True
    return text.strip(), found


def content_text(content: Any) -> tuple[str, str | None]:
    """(answer text, refusal text) of a message's `content`: a string, or a list of parts whose
    text parts are joined as sent (other part types, such as "thinking", are left out)."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        return "", None
    texts, refusals = [], []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in _TEXT_PARTS or (kind is None and "text" in part):
            texts.append(part.get("text"))
        elif kind == "refusal":
            refusals.append(part.get("refusal"))
    refusal = "".join(r for r in refusals if isinstance(r, str)).strip()
    return "".join(t for t in texts if isinstance(t, str)), refusal or None


def read_choice(choice: Mapping[str, Any]) -> Answer:
    """The caption, refusal and finish reason of one choice; unknown fields are ignored."""
    message = choice.get("message")
    message = message if isinstance(message, Mapping) else {}
    raw, part_refusal = content_text(message.get("content"))
    text, set_aside = strip_reasoning(raw)
    refusal = message.get("refusal")
    refusal = refusal.strip() if isinstance(refusal, str) and refusal.strip() else part_refusal
    return Answer(text, refusal, finish_reason(choice.get("finish_reason")), set_aside)
