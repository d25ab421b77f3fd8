"""Strict, sans-I/O validation of a chat-completions request body into a ChatRequest.

Rejects, with the real API's 400 wording and codes, what the real API rejects and a pipeline
could get wrong: unknown parameters and content part types, image_url without url, detail outside
auto/low/high, max_tokens for reasoning models, sampling parameters reasoning models do not take,
and malformed structured-output formats. Image payloads are decoded later (image_parts.py),
because a URL may need fetching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from beam_caption.simulator.apierror import (
    bad_request,
    invalid_type,
    invalid_value,
    missing,
    not_found,
)
from beam_caption.simulator.json_answers import ResponseFormat, check_response_format

# CreateChatCompletionRequest's properties in the official OpenAPI description: the API answers
# "Unrecognized request argument supplied" for anything else.
KNOWN_PARAMS = frozenset((
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
    "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options"))
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
USER_PARTS = ("text", "image_url", "input_audio", "file")
DETAILS = ("auto", "low", "high")
_REASONING_NAME = re.compile(r"^(gpt-5|o\d)")


@dataclass(frozen=True)
class ImagePart:
    """One image_url content part of a request: its URL (data: or http[s]:), detail, JSON path."""

    url: str
    detail: str
    param: str


@dataclass(frozen=True)
class ChatRequest:
    """What the simulator needs from a valid request."""

    model: str
    texts: tuple[str, ...]
    n_messages: int
    images: tuple[ImagePart, ...]
    max_completion_tokens: int | None
    n: int
    response_format: ResponseFormat


def is_reasoning_model(model: str, flagged: bool = False) -> bool:
    """gpt-5* and o-series models (or a price-table entry with "reasoning": true)."""
    return flagged or bool(_REASONING_NAME.match(model))


def parse_chat_request(body: Any, models: frozenset[str], reasoning: bool) -> ChatRequest:
    """Validate `body`; `models` are the served model ids, `reasoning` is the table's flag."""
    if not isinstance(body, dict):
        raise bad_request("Invalid request body: expected a JSON object.")
    for key in body:
        if key not in KNOWN_PARAMS:
            raise bad_request(f"Unrecognized request argument supplied: {key}", key,
                              "unknown_parameter")
    model = body.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", "model",
                          "missing_required_parameter")
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    if model not in models:
        raise not_found(f"The model `{model}` does not exist or you do not have access to it.",
                        "model_not_found", "model")
    texts, images, n_messages = _parse_messages(body.get("messages"))
    reasons = is_reasoning_model(model, reasoning)
    limit = _max_tokens(body, reasons)
    _check_sampling(body, model, reasons)
    n = body.get("n")
    n = 1 if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise bad_request(f"Invalid 'n': expected an integer in 1..128, got {n!r}.", "n",
                          "invalid_value")
    if body.get("stream"):
        raise bad_request("The simulator does not stream: send 'stream': false.", "stream",
                          "unsupported_value")
    fmt = check_response_format(body.get("response_format"), " ".join(texts))
    return ChatRequest(model, tuple(texts), n_messages, tuple(images), limit, n, fmt)


def _parse_messages(messages: Any) -> tuple[list[str], list[ImagePart], int]:
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    _check_not_empty(messages, "messages")
    texts: list[str] = []
    images: list[ImagePart] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = _kind(message, param, "role", ROLES)
        content = message.get("content")
        if content is None and role in ("system", "developer", "user", "tool"):
            raise missing(f"{param}.content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            _parse_parts(content, role, f"{param}.content", texts, images)
        elif content is not None:
            raise invalid_type(f"{param}.content", "a string or an array", content)
    return texts, images, len(messages)


def _parse_parts(parts: list[Any], role: str, param: str, texts: list[str],
                 images: list[ImagePart]) -> None:
    _check_not_empty(parts, param)
    allowed = USER_PARTS if role == "user" else ("text", "refusal") if role == "assistant" \
        else ("text",)
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        kind = _kind(part, where, "type", allowed)
        if kind in ("text", "refusal"):
            texts.append(_required(part, where, kind, str, "a string"))
        elif kind == "image_url":
            images.append(_parse_image_part(part, where))
        else:
            # Audio and file inputs exist in the API but no model the simulator serves takes them.
            raise bad_request(f"Invalid content type. {kind} is not supported by this model.",
                              f"{where}.type", "unsupported_value")


def _parse_image_part(part: dict[str, Any], where: str) -> ImagePart:
    image = _required(part, where, "image_url", dict, "an object")
    url = _required(image, f"{where}.image_url", "url", str, "a string")
    detail = image.get("detail", "auto")
    if detail not in DETAILS:
        raise invalid_value(f"{where}.image_url.detail", detail, DETAILS)
    return ImagePart(url, detail, f"{where}.image_url.url")


def _check_not_empty(items: list[Any], param: str) -> None:
    if not items:
        raise bad_request(f"Invalid '{param}': empty array. Expected an array with minimum "
                          "length 1, but got an empty array instead.", param, "empty_array")


def _kind(item: Any, where: str, key: str, allowed: tuple[str, ...]) -> str:
    """The `key` of the object `item` (a message's role, a part's type), one of `allowed`."""
    if not isinstance(item, dict):
        raise invalid_type(where, "an object", item)
    value = item.get(key)
    if value is None:
        raise missing(f"{where}.{key}")
    if value not in allowed:
        raise invalid_value(f"{where}.{key}", value, allowed)
    return value


def _required(item: dict[str, Any], where: str, key: str, kind: type, expected: str) -> Any:
    """`item[key]`, present and of type `kind` (`expected` words it for the 400)."""
    value = item.get(key)
    if value is None:
        raise missing(f"{where}.{key}")
    if not isinstance(value, kind):
        raise invalid_type(f"{where}.{key}", expected, value)
    return value


def _max_tokens(body: dict[str, Any], reasoning: bool) -> int | None:
    if body.get("max_tokens") is not None and reasoning:
        raise bad_request("Unsupported parameter: 'max_tokens' is not supported with this "
                          "model. Use 'max_completion_tokens' instead.", "max_tokens",
                          "unsupported_parameter")
    limit = None
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid_type(key, "an integer", value)
        if value < 1:
            raise bad_request(f"Invalid '{key}': integer below minimum value. Expected a value "
                              f">= 1, but got {value} instead.", key, "integer_below_min_value")
        limit = value if limit is None else min(limit, value)
    return limit


def _check_sampling(body: dict[str, Any], model: str, reasoning: bool) -> None:
    for key, low, high in (("temperature", 0, 2), ("top_p", 0, 1),
                           ("frequency_penalty", -2, 2), ("presence_penalty", -2, 2)):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise invalid_type(key, "a number", value)
        if not low <= value <= high:
            raise bad_request(f"Invalid '{key}': expected a value between {low} and {high}, "
                              f"got {value}.", key, "invalid_value")
        # Reasoning models only take the default sampling settings.
        if reasoning and key in ("temperature", "top_p") and value != 1:
            raise bad_request(f"Unsupported value: '{key}' does not support {value} with this "
                              "model. Only the default (1) value is supported.", key,
                              "unsupported_value")
