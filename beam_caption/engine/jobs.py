"""What the engine is handed and what it hands back: a job (one request with everything that
belongs to it, not to the engine) and its outcome (an answer, or the error that ended it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from beam_caption.api.errors import ApiError
from beam_caption.api.ratelimits import RateLimitInfo
from beam_caption.api.response import ChatResult
from beam_caption.api.retry import is_retryable
from beam_caption.cost.pricing import ModelPrice
from beam_caption.engine.run_state import RunState
from beam_caption.engine.stop import StopReason

NO_RATE_LIMITS = RateLimitInfo()


@dataclass(frozen=True)
class CaptionJob:
    """One request to send, with everything that belongs to it and not to the engine."""

    key: str  # the request_key: identical keys share one answer
    uri: str
    body: bytes  # the JSON request body, built by the job's own transform
    estimated_prompt_tokens: int
    max_output_tokens: int
    price: ModelPrice | None
    run: RunState
    dedupe: bool = True
    url: str | None = None  # where the body goes (None: the endpoint's chat-completions URL)
    source_id: str | None = None  # with uri, what tells a redelivery from a duplicate


@dataclass(frozen=True, slots=True)
class CaptionOutcome:
    """How a job ended: an answer or the error that ended it, what it took and what it cost."""

    result: ChatResult | None = None
    error: ApiError | None = None
    attempts: int = 0
    latency_ms: float | None = None
    cost_usd: float | None = None  # the answer's (or a billed error's) cost; None: no price
    stopped: StopReason | None = None  # the run stopped before this job had an answer
    abandoned: bool = False  # in flight when an interrupt's grace period ran out
    shared_from: str | None = None  # the uri whose request paid for this answer (a duplicate)
    redelivered: bool = False  # the same image's answer again (a retried bundle)

    @property
    def carries_answer(self) -> bool:
        """True when the provider answered (and billed): a caption, or a billed refusal."""
        if self.result is not None:
            return True
        error = self.error
        return error is not None and error.usage is not None and not is_retryable(error)

    def remembered(self) -> CaptionOutcome:
        """This outcome as the answer memory keeps it: without the response's rate-limit
        headers, which only pace the request that received them (a quarter of its size)."""
        if self.result is None or self.result.rate_limits == NO_RATE_LIMITS:
            return self
        return replace(self, result=replace(self.result, rate_limits=NO_RATE_LIMITS))
