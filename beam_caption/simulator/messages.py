"""POST /v1/messages: Anthropic's Messages API, validated strictly and answered by the same
computed completion as chat completions (completion.py), behind the same limits, faults and
latency (chat.serve). The Message Batches API reuses `parse_messages_request` and
`message_body` (messages_batch.py).

Validation follows the Messages API reference: model, max_tokens and messages are required;
unknown top-level fields are refused; content is a string or a list of text and image blocks;
an image block's source is base64 (media_type image/jpeg, png, gif or webp) or a URL.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from beam_caption.simulator.apierror import SimError, bad_request, not_found
from beam_caption.simulator.chat import RECORD, serve
from beam_caption.simulator.completion import Completion, complete
from beam_caption.simulator.dialects import MESSAGES_PATH, render_error
from beam_caption.simulator.json_answers import ResponseFormat
from beam_caption.simulator.state import STATE
from beam_caption.simulator.validation import ChatRequest, ImagePart
from beam_caption.simulator.wire import read_json

KNOWN_PARAMS = frozenset((
    "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k",
    "stop_sequences", "metadata", "stream", "thinking", "tools", "tool_choice", "service_tier",
    "container", "mcp_servers"))
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}


async def create_message(request: web.Request) -> web.StreamResponse:
    """The endpoint: validate, compute, then limits, faults and latency as chat completions."""
    state = request.app[STATE]
    record = request[RECORD]
    record.body = await read_json(request)
    chat = parse_messages_request(record.body, state.models)
    record.model = chat.model
    done = await complete(state, chat)
    return await serve(request, done, message_body)


def parse_messages_request(body: Any, models: frozenset[str]) -> ChatRequest:
    """Validate a Messages body into the simulator's ChatRequest; SimError as the API answers."""
    if not isinstance(body, dict):
        raise bad_request("Invalid request body: expected a JSON object.")
    for key in body:
        if key not in KNOWN_PARAMS:
            raise bad_request(f"{key}: Extra inputs are not permitted")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required")
    if model not in models:
        raise not_found(f"model: {model}")
    limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise bad_request("max_tokens: Field required (an integer of at least 1)")
    texts: list[str] = []
    n_messages = 0
    system = body.get("system")
    if system is not None:
        texts.extend(_system_texts(system))
        n_messages += 1
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: Field required (a non-empty list)")
    images: list[ImagePart] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise bad_request(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        _read_content(message.get("content"), f"messages.{i}.content", texts, images)
        n_messages += 1
    if messages[0].get("role") != "user":
        raise bad_request("messages: first message must use the \"user\" role")
    return ChatRequest(model, tuple(texts), n_messages, tuple(images), limit, 1,
                       ResponseFormat())


def _system_texts(system: Any) -> list[str]:
    if isinstance(system, str):
        return [system]
    if isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text"
                                        and isinstance(b.get("text"), str) for b in system):
        return [b["text"] for b in system]
    raise bad_request("system: Input should be a valid string or a list of text blocks")


def _read_content(content: Any, where: str, texts: list[str], images: list[ImagePart]) -> None:
    if isinstance(content, str):
        texts.append(content)
        return
    if not isinstance(content, list) or not content:
        raise bad_request(f"{where}: Input should be a valid string or a non-empty list")
    for j, block in enumerate(content):
        path = f"{where}.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "image":
            images.append(_image(block.get("source"), f"{path}.source"))
        else:
            raise bad_request(f"{path}: Input tag {kind!r} found using 'type' does not match "
                              "any of the expected tags: 'text', 'image'")


def _image(source: Any, path: str) -> ImagePart:
    if not isinstance(source, dict):
        raise bad_request(f"{path}: Field required")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return ImagePart(source["url"], "auto", path)
    if source.get("type") != "base64":
        raise bad_request(f"{path}.type: Input should be 'base64' or 'url'")
    media = source.get("media_type")
    if media not in MEDIA_TYPES:
        raise bad_request(f"{path}.media_type: Input should be "
                          f"{', '.join(repr(m) for m in MEDIA_TYPES)}")
    data = source.get("data")
    if not isinstance(data, str) or not data:
        raise bad_request(f"{path}.data: Field required")
    return ImagePart(f"data:{media};base64,{data}", "auto", path)


def message_body(done: Completion, reason: str | None = None) -> dict[str, Any]:
    """The Message object of a computed completion (`reason` content_filter: a refusal)."""
    reason = reason or done.answer.finish_reason
    refused = reason == "content_filter"
    output = 0 if refused else done.completion_tokens
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": done.request.model,
            "content": [] if refused else [{"type": "text", "text": done.answer.content}],
            "stop_reason": _STOP.get(reason, "end_turn"), "stop_sequence": None,
            "usage": {"input_tokens": done.prompt_tokens, "output_tokens": output,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "service_tier": "standard"}}


def error_result(exc: SimError) -> dict[str, Any]:
    """The `error` of a batch result line for a request the API refused."""
    _, body, _ = render_error(MESSAGES_PATH, exc)
    return body
