"""The Batch API: files, lifecycle, results keyed by custom_id, error file, limits, billing."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from beam_caption.simulator import SimulatorHandle, running_simulator
from tests.integration.simclient import chat, chat_body, get, image_bytes, post_json, upload

BATCH_SECONDS = 0.6


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(api_key="test-key", batch_seconds=BATCH_SECONDS, batch_max_lines=20,
                           batch_max_bytes=200_000) as handle:
        yield handle


def _line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": body}


def _jsonl(items: list[Any]) -> bytes:
    return b"".join((i if isinstance(i, bytes) else json.dumps(i).encode()) + b"\n"
                    for i in items)


def _start(sim: SimulatorHandle, data: bytes) -> dict[str, Any]:
    file = upload(sim.base_url, data)
    assert file.status == 200, file.raw
    batch = post_json(sim.base_url, "/batches", {"input_file_id": file.json()["id"],
                                                 "endpoint": "/v1/chat/completions",
                                                 "completion_window": "24h"})
    assert batch.status == 200, batch.raw
    return batch.json()


def _wait(sim: SimulatorHandle, batch_id: str, until: tuple[str, ...] = (
        "completed", "failed", "cancelled")) -> tuple[dict[str, Any], list[str]]:
    statuses: list[str] = []
    deadline = time.monotonic() + 10 * BATCH_SECONDS + 2
    while time.monotonic() < deadline:
        batch = get(sim.base_url, f"/batches/{batch_id}").json()
        if not statuses or statuses[-1] != batch["status"]:
            statuses.append(batch["status"])
        if batch["status"] in until:
            return batch, statuses
        time.sleep(0.02)
    raise AssertionError(f"batch stuck in {statuses}")


def _content(sim: SimulatorHandle, file_id: str) -> list[dict[str, Any]]:
    reply = get(sim.base_url, f"/files/{file_id}/content")
    assert reply.status == 200
    return [json.loads(line) for line in reply.raw.splitlines()]


def test_batch_lifecycle_results_errors_and_half_price(sim: SimulatorHandle) -> None:
    sim.reset()
    images = [image_bytes(64 + i, 48, (20 * i, 100, 50)) for i in range(8)]
    good = [_line(f"img-{i}", chat_body("gpt-4.1-nano", img, max_completion_tokens=60))
            for i, img in enumerate(images)]
    bad_request = _line("bad-detail", chat_body(detail="max"))
    malformed = [b"{this is not json", json.dumps({"custom_id": "no-body", "method": "POST",
                                                   "url": "/v1/chat/completions"}).encode()]
    batch = _start(sim, _jsonl([*good, bad_request, *malformed]))
    assert batch["status"] == "validating"
    done, statuses = _wait(sim, batch["id"])
    assert statuses[-1] == "completed"
    assert {"in_progress", "finalizing"} <= set(statuses)
    assert done["request_counts"] == {"total": 11, "completed": 8, "failed": 3}
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert done[stamp] >= done["created_at"]

    output = _content(sim, done["output_file_id"])
    ids = [line["custom_id"] for line in output]
    assert sorted(ids) == sorted(f"img-{i}" for i in range(8))
    assert ids != sorted(ids, key=lambda c: int(c.split("-")[1]))  # any order, keyed by id
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        i = int(line["custom_id"].split("-")[1])
        content = line["response"]["body"]["choices"][0]["message"]["content"]
        assert content.endswith(f"{64 + i}x48.")  # each answer is about its own image

    errors = {line["custom_id"]: line for line in _content(sim, done["error_file_id"])}
    assert errors["bad-detail"]["response"]["status_code"] == 400
    assert errors["no-body"]["error"]["code"] == "invalid_request"
    assert None in errors  # the unparseable line has no custom_id

    stats = sim.stats()
    prompt = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in output)
    completion = sum(line["response"]["body"]["usage"]["completion_tokens"] for line in output)
    # By hand (gpt-4.1-nano, 32 px patches * 2.46): the 64x48 image is 2 * 2 = 4 patches -> 9.84
    # -> 10 tokens; the seven 65..71 x 48 ones are 3 * 2 = 6 patches -> 14.76 -> 15 each. The
    # prompt text is ceil(36 bytes / 4) = 9, + 3 per message + 3 priming = 15 per line.
    # 10 + 7 * 15 + 8 * 15 = 235.
    assert stats["tokens"]["batch"]["prompt"] == prompt == done["usage"]["input_tokens"] == 235
    assert stats["tokens"]["batch"]["completion"] == completion
    # gpt-4.1-nano costs $0.10 in / $0.40 out per million tokens; batches bill half of that.
    full = (235 * 0.10 + completion * 0.40) / 1e6
    assert stats["cost_usd"]["batch"] == pytest.approx(full / 2, rel=1e-6)
    assert stats["cost_usd"]["realtime"] == 0
    assert stats["successes_by_image"] == {hashlib.sha256(i).hexdigest(): 1 for i in images}
    assert stats["batch_lines"] == {"ok": 8, "failed": 3}


def test_files_metadata_and_listing(sim: SimulatorHandle) -> None:
    data = _jsonl([_line("a", chat_body())])
    file = upload(sim.base_url, data).json()
    assert file["bytes"] == len(data) and file["purpose"] == "batch"
    assert get(sim.base_url, f"/files/{file['id']}").json() == file
    assert get(sim.base_url, f"/files/{file['id']}/content").raw == data
    assert get(sim.base_url, "/files/file-nope").status == 404
    assert upload(sim.base_url, data, purpose="fine-tune").status == 400
    first = _start(sim, data)
    second = _start(sim, data)
    listing = get(sim.base_url, "/batches?limit=1").json()
    assert listing["data"][0]["id"] == second["id"] and listing["has_more"] is True
    after = get(sim.base_url, f"/batches?limit=100&after={second['id']}").json()
    assert first["id"] in [b["id"] for b in after["data"]]
    assert get(sim.base_url, "/batches/batch_nope").status == 404
    for batch in (first, second):  # let them finish, so later tests' ledgers stay exact
        assert _wait(sim, batch["id"])[0]["status"] == "completed"


def test_batch_limits(sim: SimulatorHandle) -> None:
    too_big = upload(sim.base_url, b"x" * 200_001)
    assert too_big.status == 400 and too_big.error["code"] == "file_too_large"
    too_many = _start(sim, _jsonl([_line(f"c{i}", chat_body()) for i in range(21)]))
    failed, _ = _wait(sim, too_many["id"])
    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["code"] == "too_many_lines"
    duplicate = _start(sim, _jsonl([_line("same", chat_body()), _line("same", chat_body())]))
    failed, _ = _wait(sim, duplicate["id"])
    assert failed["errors"]["data"][0] == {"code": "duplicate_custom_id", "line": 2,
                                           "param": None, "message": failed["errors"]["data"]
                                           [0]["message"]}
    mixed = _start(sim, _jsonl([_line("a", chat_body("gpt-4.1-nano")),
                                _line("b", chat_body("gpt-4.1-mini"))]))
    assert _wait(sim, mixed["id"])[0]["errors"]["data"][0]["code"] == "mismatched_model"
    wrong = post_json(sim.base_url, "/batches", {"input_file_id": too_many["input_file_id"],
                                                 "endpoint": "/v1/embeddings",
                                                 "completion_window": "24h"})
    assert wrong.status == 400 and wrong.error["param"] == "endpoint"


def test_cancel_keeps_and_bills_only_finished_lines(sim: SimulatorHandle) -> None:
    sim.reset()
    batch = _start(sim, _jsonl([_line(f"c{i}", chat_body()) for i in range(20)]))
    _wait(sim, batch["id"], until=("in_progress",))
    time.sleep(0.1 * BATCH_SECONDS)
    cancelling = post_json(sim.base_url, f"/batches/{batch['id']}/cancel", {}).json()
    assert cancelling["status"] == "cancelling"
    cancelled, _ = _wait(sim, batch["id"])
    assert cancelled["status"] == "cancelled"
    done = cancelled["request_counts"]["completed"]
    assert 0 < done < 20
    assert len(_content(sim, cancelled["output_file_id"])) == done
    assert sim.stats()["batch_lines"]["ok"] == done
    again = post_json(sim.base_url, f"/batches/{batch['id']}/cancel", {})
    assert again.status == 409


def test_batch_and_realtime_successes_share_the_per_image_ledger(sim: SimulatorHandle) -> None:
    sim.reset()
    image = image_bytes(90, 60, (1, 2, 3))
    assert chat(sim.base_url, chat_body(image=image)).status == 200
    batch = _start(sim, _jsonl([_line("dup", chat_body(image=image))]))
    _wait(sim, batch["id"])
    # The same image paid for twice (once realtime, once in a batch) is visible as 2.
    assert sim.stats()["successes_by_image"][hashlib.sha256(image).hexdigest()] == 2
