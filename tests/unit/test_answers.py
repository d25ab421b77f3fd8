"""The answer memory: one payment per request_key in a process, told apart by uri."""

from __future__ import annotations

import asyncio

from beam_caption.api.errors import ContentFiltered, ServerError
from beam_caption.api.ratelimits import RateLimitInfo
from beam_caption.api.response import ChatResult
from beam_caption.api.usage import Usage
from beam_caption.engine.answers import AnswerMemory
from beam_caption.engine.jobs import CaptionOutcome

ANSWER = CaptionOutcome(result=ChatResult("A cat.", "stop", "req-1", "m", Usage(100, 10, 110),
                                          RateLimitInfo()),
                        attempts=2, latency_ms=250.0, cost_usd=3e-5)


class Endpoint:
    """Counts the sends; each send takes a little while, as a request would."""

    def __init__(self, outcome: CaptionOutcome) -> None:
        self.outcome = outcome
        self.sent = 0

    async def send(self) -> CaptionOutcome:
        self.sent += 1
        await asyncio.sleep(0.01)
        return self.outcome


def _run(*calls):
    async def go():
        memory, endpoint = AnswerMemory(capacity=2), Endpoint(ANSWER)
        results = await asyncio.gather(*(memory.answer(key, uri, endpoint.send)
                                         for key, uri in calls))
        return results, endpoint.sent, memory
    return asyncio.run(go())


def test_a_duplicate_shares_the_answer_with_its_real_cost_and_names_the_payer() -> None:
    (first, copy), sent, _ = _run(("k", "/a.jpg"), ("k", "/copy-of-a.jpg"))
    assert sent == 1
    assert first == ANSWER
    assert (copy.shared_from, copy.cost_usd, copy.attempts, copy.redelivered) == (
        "/a.jpg", 3e-5, 0, False)


def test_the_same_image_again_is_a_redelivery_identical_to_the_first() -> None:
    (first, again), sent, _ = _run(("k", "/a.jpg"), ("k", "/a.jpg"))
    assert sent == 1
    assert again.redelivered and again.shared_from is None
    assert (again.result, again.attempts, again.latency_ms, again.cost_usd) == (
        first.result, first.attempts, first.latency_ms, first.cost_usd)


def test_the_same_file_under_another_source_id_is_a_duplicate_not_a_redelivery() -> None:
    async def go():
        memory, endpoint = AnswerMemory(), Endpoint(ANSWER)
        first = await memory.answer("k", "/a.jpg", endpoint.send, "id-1")
        again = await memory.answer("k", "/a.jpg", endpoint.send, "id-1")
        other = await memory.answer("k", "/a.jpg", endpoint.send, "id-2")
        return first, again, other, endpoint.sent
    first, again, other, sent = asyncio.run(go())
    assert sent == 1 and first == ANSWER
    assert again.redelivered and again.shared_from is None
    # Its own row, but the money counted once: it names the payer, as any duplicate does.
    assert (other.redelivered, other.shared_from, other.cost_usd) == (False, "/a.jpg", 3e-5)


def test_failures_without_an_answer_are_not_shared_but_billed_refusals_are() -> None:
    async def go(outcome):
        memory, endpoint = AnswerMemory(), Endpoint(outcome)
        await memory.answer("k", "/a.jpg", endpoint.send)
        await memory.answer("k", "/b.jpg", endpoint.send)
        return endpoint.sent

    unanswered = CaptionOutcome(error=ServerError("HTTP 500", status=500), attempts=6)
    assert asyncio.run(go(unanswered)) == 2, "a copy of a failure gets its own chance"
    refused = CaptionOutcome(error=ContentFiltered("filtered", status=200, code="content_filter",
                                                   usage=Usage(100, 5, 105)), attempts=1)
    assert refused.carries_answer
    assert asyncio.run(go(refused)) == 1, "a billed refusal would be billed again"


def test_the_memory_is_bounded_oldest_first() -> None:
    (_, _, _, again), sent, memory = _run(("k1", "/1"), ("k2", "/2"), ("k3", "/3"), ("k1", "/1"))
    assert len(memory) <= 2
    assert sent == 4 and not again.redelivered, "k1 was forgotten to make room"


def test_the_memory_keeps_what_a_copy_needs_and_no_more() -> None:
    limited = CaptionOutcome(result=ChatResult("A cat.", "stop", "req-1", "m", Usage(100, 10, 110),
                                               RateLimitInfo(remaining_requests=5)),
                             attempts=2, latency_ms=250.0, cost_usd=3e-5)

    async def go():
        memory, endpoint = AnswerMemory(), Endpoint(limited)
        first = await memory.answer("k", "/a.jpg", endpoint.send)
        again = await memory.answer("k", "/a.jpg", endpoint.send)
        return first, again, memory, endpoint.sent

    first, again, memory, sent = asyncio.run(go())
    assert sent == 1
    assert first is limited, "the request that paid gets its own outcome, headers and all"
    # The copy's row is the same; only the rate-limit headers (pacing, not rows) are dropped.
    assert again.result.rate_limits == RateLimitInfo()
    assert (again.result.caption, again.result.usage, again.result.request_id, again.cost_usd,
            again.attempts, again.latency_ms) == ("A cat.", Usage(100, 10, 110), "req-1", 3e-5,
                                                  2, 250.0)
    [entry] = memory._entries.values()
    assert entry.future is None and entry.outcome is not None, "a finished entry holds no future"


def test_a_cancelled_first_copy_lets_the_waiting_copy_send() -> None:
    async def go():
        memory, endpoint = AnswerMemory(), Endpoint(ANSWER)
        first = asyncio.create_task(memory.answer("k", "/a.jpg", endpoint.send))
        await asyncio.sleep(0)
        copy = asyncio.create_task(memory.answer("k", "/b.jpg", endpoint.send))
        await asyncio.sleep(0)
        first.cancel()
        outcome = await copy
        return outcome, endpoint.sent, len(memory)

    outcome, sent, kept = asyncio.run(go())
    assert outcome == ANSWER and sent == 2 and kept == 0
