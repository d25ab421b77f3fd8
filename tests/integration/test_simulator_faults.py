"""Every injected fault kind, what the client sees, what the ledger bills, and seeding."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest

from beam_caption.simulator import SimulatorHandle, running_simulator
from tests.integration.simclient import Reply, chat, chat_body

FAULTS = ("rate_429", "rate_500", "rate_503", "rate_timeout", "rate_disconnect",
          "rate_broken_json", "rate_quota", "rate_content_filter")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(hang_seconds=0.3) as handle:
        yield handle


@pytest.fixture
def only(sim: SimulatorHandle) -> Iterator[object]:
    """only(fault) sets that fault's rate to 1 (all others 0) and zeroes the ledger."""

    def set_only(fault: str) -> None:
        sim.update(**{name: 1.0 if name == fault else 0.0 for name in FAULTS})
        sim.reset()

    yield set_only
    sim.update(**dict.fromkeys(FAULTS, 0.0))


def _outcomes(sim: SimulatorHandle) -> dict[str, int]:
    return {k: v for k, v in sim.stats()["requests"]["by_outcome"].items() if v}


def _wait_for_outcome(sim: SimulatorHandle, outcome: str) -> dict[str, int]:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        seen = _outcomes(sim)
        if seen.get(outcome):
            return seen
        time.sleep(0.02)
    return _outcomes(sim)


def _nothing_billed(sim: SimulatorHandle) -> None:
    stats = sim.stats()
    assert stats["tokens"]["realtime"] == {"prompt": 0, "completion": 0, "cached": 0}
    assert stats["successes_by_image"] == {}
    assert stats["cost_usd"]["total"] == 0


@pytest.mark.parametrize(("fault", "status", "kind", "code", "outcome", "retry_hint"), [
    ("rate_429", 429, "requests", "rate_limit_exceeded", "rate_limited", True),
    ("rate_500", 500, "server_error", None, "server_error", False),
    ("rate_503", 503, "server_error", None, "server_error", False),
    ("rate_quota", 429, "insufficient_quota", "insufficient_quota", "insufficient_quota", False),
])
def test_error_faults(sim: SimulatorHandle, only, fault: str, status: int, kind: str,
                      code: str | None, outcome: str, retry_hint: bool) -> None:
    only(fault)
    reply = chat(sim.base_url, chat_body())
    assert reply.status == status
    assert (reply.error["type"], reply.error["code"]) == (kind, code)
    assert ("retry-after-ms" in reply.headers) is retry_hint
    if retry_hint:
        assert 50 <= int(reply.headers["retry-after-ms"]) <= 500
        assert "Please try again in" in reply.error["message"]
    assert _outcomes(sim) == {outcome: 1}
    _nothing_billed(sim)


def test_timeout_fault_outlasts_the_client_timeout(sim: SimulatorHandle, only) -> None:
    only("rate_timeout")
    sim.update(hang_seconds=30)
    try:
        started = time.monotonic()
        with pytest.raises((TimeoutError, socket.timeout)):
            chat(sim.base_url, chat_body(), timeout=0.5)
        assert time.monotonic() - started < 2
        assert _wait_for_outcome(sim, "timeout") == {"timeout": 1}
    finally:
        sim.update(hang_seconds=0.3)
    _nothing_billed(sim)


def test_timeout_fault_drops_the_connection_after_hang_seconds(sim: SimulatorHandle,
                                                               only) -> None:
    only("rate_timeout")
    started = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        chat(sim.base_url, chat_body(), timeout=5)
    assert 0.25 <= time.monotonic() - started < 3
    assert _outcomes(sim) == {"timeout": 1}


def test_disconnect_fault_closes_without_an_answer(sim: SimulatorHandle, only) -> None:
    only("rate_disconnect")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        chat(sim.base_url, chat_body())
    assert _outcomes(sim) == {"disconnect": 1}
    _nothing_billed(sim)


def test_broken_json_fault_is_a_truncated_200(sim: SimulatorHandle, only) -> None:
    only("rate_broken_json")
    reply = chat(sim.base_url, chat_body())
    assert reply.status == 200
    assert int(reply.headers["content-length"]) == len(reply.raw)
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.raw)
    assert reply.raw.startswith(b'{"id":"chatcmpl-')
    assert _outcomes(sim) == {"broken_json": 1}
    _nothing_billed(sim)


def test_content_filter_fault_is_billed_for_the_prompt(sim: SimulatorHandle, only) -> None:
    only("rate_content_filter")
    reply = chat(sim.base_url, chat_body())
    assert reply.status == 200
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] is None
    usage = reply.json()["usage"]
    stats = sim.stats()
    assert _outcomes(sim) == {"content_filter": 1}
    assert stats["tokens"]["realtime"]["prompt"] == usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == 0
    assert sum(stats["successes_by_image"].values()) == 1


def _label(reply: Reply) -> str:
    """status:error-code, status:finish_reason or 200:broken for one answer."""
    try:
        body = reply.json()
    except json.JSONDecodeError:
        return f"{reply.status}:broken"
    if reply.status != 200:
        return f"{reply.status}:{body['error']['code']}"
    return f"200:{body['choices'][0]['finish_reason']}"


def test_faults_are_seeded_and_mixed_rates_hit_every_kind() -> None:
    rates = {"rate_429": 0.12, "rate_500": 0.12, "rate_503": 0.12, "rate_disconnect": 0.12,
             "rate_broken_json": 0.12, "rate_quota": 0.12, "rate_content_filter": 0.12}

    def run(seed: int) -> list[str]:
        with running_simulator(seed=seed, **rates) as sim:
            seen = []
            for _ in range(60):
                try:
                    seen.append(_label(chat(sim.base_url, chat_body())))
                except (http.client.RemoteDisconnected, ConnectionError):
                    seen.append("dropped")
            outcomes = _outcomes(sim)
        assert set(outcomes) == {"ok", "rate_limited", "server_error", "disconnect",
                                 "broken_json", "insufficient_quota", "content_filter"}
        assert outcomes["server_error"] > outcomes["rate_limited"] / 3  # two kinds of 5xx
        return seen

    first = run(11)
    assert run(11) == first  # same seed, same story
    assert run(12) != first
