"""One chat completion, computed: validate, load images, caption, count tokens, build the body.

Shared by the realtime endpoint (which adds limits, faults and latency) and the Batch API. The
only I/O is fetching http(s) image URLs, and only from loopback addresses: the simulator never
reaches out.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from beam_caption.cost import tokens
from beam_caption.loopback import is_loopback_host
from beam_caption.simulator.apierror import bad_request
from beam_caption.simulator.image_parts import MAX_IMAGE_BYTES, ImageFacts, analyse, decode_data_url
from beam_caption.simulator.json_answers import answer_text, prompted_format
from beam_caption.simulator.state import SimState
from beam_caption.simulator.usage import Answer, cut_answer, prompt_tokens, usage_body
from beam_caption.simulator.validation import ChatRequest, ImagePart, parse_chat_request

SYSTEM_FINGERPRINT = "fp_beamcaption_sim"


@dataclass(frozen=True)
class Completion:
    """A computed answer: the request, its images, the answer and the token counts."""

    request: ChatRequest
    images: tuple[ImageFacts, ...]
    answer: Answer
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over every choice (n choices are billed n times)."""
        return self.answer.completion_tokens * self.request.n

    @property
    def image_hashes(self) -> list[str]:
        """sha256 of each image, as received."""
        return [f.sha256 for f in self.images]

    @property
    def text_tokens(self) -> int:
        """The text part of the prompt tokens (texts and message overhead)."""
        return tokens.messages_text_tokens(list(self.request.texts), self.request.n_messages)

    def usage(self) -> dict[str, Any]:
        """The usage object of the response."""
        return usage_body(self.prompt_tokens, self.completion_tokens)

    def body(self, finish_reason: str | None = None) -> dict[str, Any]:
        """The CreateChatCompletionResponse; finish_reason overrides (content_filter)."""
        reason = finish_reason or self.answer.finish_reason
        content = None if reason == "content_filter" else self.answer.content
        usage = self.usage()
        if reason == "content_filter":
            usage = usage_body(self.prompt_tokens, 0)
        choice = {"message": {"role": "assistant", "content": content, "refusal": None,
                              "annotations": []},
                  "logprobs": None, "finish_reason": reason}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.request.model,
            "choices": [{"index": i, **choice} for i in range(self.request.n)],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }


async def compute(state: SimState, body: Any) -> Completion:
    """Validate `body` and compute its completion; raises SimError as the API would answer."""
    model = body.get("model") if isinstance(body, dict) else None
    reasoning = state.is_reasoning(model) if isinstance(model, str) else False
    return await complete(state, parse_chat_request(body, state.models, reasoning))


async def complete(state: SimState, request: ChatRequest) -> Completion:
    """The completion of a validated request, whichever wire format it came in (the Messages
    and generateContent endpoints validate into the same ChatRequest)."""
    facts = [await load_image(state, part) for part in request.images]
    price = state.prices.get(request.model)
    rule = price.image_tokens if price and price.image_tokens else None
    sized = [(f, part.detail) for f, part in zip(facts, request.images, strict=True)]
    prompt = prompt_tokens(rule, request.texts, request.n_messages, sized)
    fmt = (request.response_format if state.config.ignore_json_prompts
           else prompted_format(request.response_format, request.texts))
    answer = cut_answer(answer_text(fmt, facts),
                        request.max_completion_tokens)
    return Completion(request, tuple(facts), answer, prompt)


async def load_image(state: SimState, part: ImagePart) -> ImageFacts:
    """Decode a data URL, or fetch a loopback http(s) URL, and analyse the image."""
    if part.url.startswith("data:"):
        return analyse(decode_data_url(part.url, part.param), part.param)
    split = urlsplit(part.url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise bad_request("Invalid image URL: expected a data URL or an http(s) URL.",
                          part.param, "invalid_image_url")
    if not is_loopback_host(split.hostname):
        raise bad_request(f"Error while downloading {part.url}: the simulator fetches image URLs "
                          "from loopback addresses only; send the image as a base64 data URL.",
                          part.param, "invalid_image_url")
    data = await _fetch(state, part)
    return analyse(data, part.param)


async def _fetch(state: SimState, part: ImagePart) -> bytes:
    session = await state.http_session()
    failure = bad_request(f"Error while downloading {part.url}.", part.param, "invalid_image_url")
    try:
        # No redirects: a loopback server must not be able to send us elsewhere.
        async with session.get(part.url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise failure
            data = await resp.content.read(MAX_IMAGE_BYTES + 1)
    except (TimeoutError, aiohttp.ClientError):
        raise failure from None
    return data
