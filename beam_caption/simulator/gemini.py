"""POST /v1beta/models/{model}:generateContent: the Gemini API, validated strictly and answered
by the same computed completion as chat completions, behind the same limits, faults and
latency (chat.serve). The Batch API reuses `parse_generate_request` and `generate_body`
(gemini_batch.py).

Validation follows the API reference: `contents` is required, a list of {role, parts}; a part
is {"text"} or {"inline_data"/"inlineData": {"mime_type"/"mimeType", "data"}}; unknown
top-level fields are refused; generationConfig.maxOutputTokens caps the answer.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from beam_caption.simulator.apierror import bad_request, not_found
from beam_caption.simulator.chat import RECORD, serve
from beam_caption.simulator.completion import Completion, complete
from beam_caption.simulator.json_answers import ResponseFormat
from beam_caption.simulator.state import STATE
from beam_caption.simulator.validation import ChatRequest, ImagePart
from beam_caption.simulator.wire import read_json

KNOWN_PARAMS = frozenset((
    "contents", "systemInstruction", "system_instruction", "generationConfig",
    "generation_config", "safetySettings", "safety_settings", "tools", "toolConfig",
    "tool_config", "cachedContent", "cached_content", "labels"))
MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif")
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}


async def generate_content(request: web.Request) -> web.StreamResponse:
    """The endpoint: validate, compute, then limits, faults and latency as chat completions."""
    state = request.app[STATE]
    record = request[RECORD]
    record.body = await read_json(request)
    chat = parse_generate_request(request.match_info["model"], record.body, state.models)
    record.model = chat.model
    done = await complete(state, chat)
    return await serve(request, done, generate_body)


def parse_generate_request(model: str, body: Any, models: frozenset[str]) -> ChatRequest:
    """Validate a generateContent body for `model` into a ChatRequest; SimError as answered."""
    model = model.removeprefix("models/")
    if model not in models:
        raise not_found(f"models/{model} is not found for API version v1beta, or is not "
                        "supported for generateContent.")
    if not isinstance(body, dict):
        raise bad_request("Invalid JSON payload received. Expected an object.")
    for key in body:
        if key not in KNOWN_PARAMS:
            raise bad_request(f'Invalid JSON payload received. Unknown name "{key}": Cannot '
                              "find field.")
    texts: list[str] = []
    images: list[ImagePart] = []
    n_messages = 0
    system = body.get("systemInstruction", body.get("system_instruction"))
    if system is not None:
        _read_parts(system, "systemInstruction", texts, images)
        n_messages += 1
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise bad_request("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ("user",
                                                                                 "model"):
            raise bad_request(f"contents[{i}].role: Please use a valid role: user, model.")
        _read_parts(content, f"contents[{i}]", texts, images)
        n_messages += 1
    return ChatRequest(model, tuple(texts), n_messages, tuple(images), _max_tokens(body), 1,
                       ResponseFormat())


def _max_tokens(body: dict[str, Any]) -> int | None:
    config = body.get("generationConfig", body.get("generation_config")) or {}
    if not isinstance(config, dict):
        raise bad_request("generationConfig: expected an object")
    limit = config.get("maxOutputTokens", config.get("max_output_tokens"))
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise bad_request("generationConfig.maxOutputTokens: must be a positive integer")
    return limit


def _read_parts(content: Any, where: str, texts: list[str], images: list[ImagePart]) -> None:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise bad_request(f"* GenerateContentRequest.{where}.parts: contents.parts must not "
                          "be empty.")
    for j, part in enumerate(parts):
        path = f"{where}.parts[{j}]"
        inline = part.get("inline_data", part.get("inlineData")) if isinstance(part, dict) \
            else None
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(inline, dict):
            mime = inline.get("mime_type", inline.get("mimeType"))
            data = inline.get("data")
            if mime not in MIME_TYPES:
                raise bad_request(f"{path}.inline_data.mime_type: Unsupported MIME type: {mime}")
            if not isinstance(data, str) or not data:
                raise bad_request(f"{path}.inline_data.data: required")
            images.append(ImagePart(f"data:{mime};base64,{data}", "auto", path))
        else:
            raise bad_request(f"{path}: a part needs text or inline_data")


def generate_body(done: Completion, reason: str | None = None) -> dict[str, Any]:
    """The GenerateContentResponse of a computed completion (content_filter: SAFETY)."""
    reason = reason or done.answer.finish_reason
    filtered = reason == "content_filter"
    output = 0 if filtered else done.completion_tokens
    candidate: dict[str, Any] = {"finishReason": _FINISH.get(reason, "STOP"), "index": 0}
    if not filtered:
        candidate["content"] = {"parts": [{"text": done.answer.content}], "role": "model"}
    image_tokens = done.prompt_tokens - done.text_tokens
    return {"candidates": [candidate],
            "usageMetadata": {"promptTokenCount": done.prompt_tokens,
                              "candidatesTokenCount": output,
                              "totalTokenCount": done.prompt_tokens + output,
                              "promptTokensDetails": [
                                  {"modality": "TEXT", "tokenCount": done.text_tokens},
                                  {"modality": "IMAGE", "tokenCount": image_tokens}]},
            "modelVersion": done.request.model,
            "responseId": uuid.uuid4().hex[:22]}
