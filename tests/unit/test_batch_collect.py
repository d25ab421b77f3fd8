"""Result lines -> rows: one row per image, realtime parsing and schema, batch prices."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from beam_caption.api.request import RequestSettings
from beam_caption.api.structured import load_spec
from beam_caption.batch import ledger as bs
from beam_caption.batch.collect import shard_rows
from beam_caption.config import CaptionConfig
from beam_caption.cost.pricing import load_prices
from beam_caption.engine.settings import EndpointConfig
from beam_caption.pipeline.schema import CAPTIONS_SCHEMA, ERRORS_SCHEMA

PRICE = load_prices()["gpt-4.1-nano"]
CONFIG = CaptionConfig(request=RequestSettings(model="gpt-4.1-nano", prompt="Describe."),
                       endpoint=EndpointConfig(base_url="http://127.0.0.1:1/v1"), price=PRICE,
                       run_id="run-1")


def _meta(key: str, uri: str) -> dict[str, Any]:
    return {"request_key": key, "uri": uri, "image_id": f"img-{key}", "source_id": None,
            "width": 640, "height": 480, "sent_width": 512, "sent_height": 384, "bytes": 9000,
            "estimated_prompt_tokens": 120}


def _answer(key: str, text: str = "A cat on a mat.", finish: str = "stop") -> dict[str, Any]:
    body = {"id": f"chatcmpl-{key}", "object": "chat.completion", "model": "gpt-4.1-nano",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 118, "completion_tokens": 9, "total_tokens": 127}}
    return {"id": f"batch_req_{key}", "custom_id": key, "error": None,
            "response": {"status_code": 200, "request_id": f"req_{key}", "body": body}}


def _failure(key: str, status: int, message: str) -> dict[str, Any]:
    return {"id": f"batch_req_{key}", "custom_id": key, "error": None,
            "response": {"status_code": status, "request_id": f"req_{key}",
                         "body": {"error": {"message": message, "type": "invalid_request_error",
                                            "code": None}}}}


def _unrun(key: str, code: str) -> dict[str, Any]:
    return {"id": f"batch_req_{key}", "custom_id": key, "response": None,
            "error": {"code": code, "message": "not executed"}}


def test_answers_become_batch_rows_at_half_price_shared_by_identical_images() -> None:
    metas = [_meta("a", "/p/1.jpg"), _meta("b", "/p/2.jpg"), _meta("a", "/p/1-copy.jpg")]
    captions, errors = shard_rows(CONFIG, metas, [_answer("b"), _answer("a")], "completed")
    assert errors == []
    assert [r["uri"] for r in captions] == ["/p/1.jpg", "/p/1-copy.jpg", "/p/2.jpg"]
    paid, shared, other = captions
    assert paid["cost_usd"] == pytest.approx(PRICE.cost_usd(118, 9) / 2)
    # The copy keeps the answer's real cost and names the image that paid; totals count it once.
    assert (shared["cost_usd"], shared["deduplicated"], shared["deduplicated_from"],
            shared["attempts"]) == (paid["cost_usd"], True, "/p/1.jpg", 0)
    assert paid["deduplicated_from"] is None
    assert paid["caption"] == shared["caption"] == "A cat on a mat."
    for row in captions:
        assert row["batch"] is True and row["run_id"] == "run-1" and row["latency_ms"] is None
        assert set(row) == set(CAPTIONS_SCHEMA.names)
    assert (other["request_id"], other["estimated_prompt_tokens"], other["sent_width"]) == (
        "req_b", 120, 512)


@pytest.mark.parametrize("status, batch_errors, code", [
    ("expired", (), "batch_expired"),
    ("cancelled", (), "batch_cancelled"),
    ("failed", ("too_many_lines: 60 requests",), "batch_failed"),
    ("completed", (), "batch_failed"),
])
def test_a_request_without_a_result_line_gets_a_code_from_the_batch_status(
        status: str, batch_errors: tuple[str, ...], code: str) -> None:
    captions, errors = shard_rows(CONFIG, [_meta("a", "/p/1.jpg")], [], status, batch_errors)
    assert captions == [] and [e["code"] for e in errors] == [code]
    assert set(errors[0]) == set(ERRORS_SCHEMA.names) and errors[0]["request_key"] == "a"
    assert all(text in errors[0]["message"] for text in batch_errors)


def test_error_lines_keep_their_own_code_and_an_answer_beats_an_error_line() -> None:
    metas = [_meta(k, f"/p/{k}.jpg") for k in ("bad", "exp", "cut", "both")]
    lines = [_failure("bad", 400, "Invalid 'detail'"), _unrun("exp", "batch_expired"),
             _answer("cut", finish="content_filter"), _unrun("both", "batch_expired"),
             _answer("both")]
    captions, errors = shard_rows(CONFIG, metas, lines, "expired")
    assert [r["uri"] for r in captions] == ["/p/both.jpg"]
    by_uri = {e["uri"]: e for e in errors}
    assert (by_uri["/p/bad.jpg"]["code"], by_uri["/p/bad.jpg"]["stage"]) == ("http_400", "request")
    assert "Invalid 'detail'" in by_uri["/p/bad.jpg"]["message"]
    assert by_uri["/p/exp.jpg"]["code"] == "batch_expired"
    filtered = by_uri["/p/cut.jpg"]
    assert (filtered["code"], filtered["stage"]) == ("content_filter", "response")
    assert filtered["cost_usd"] == pytest.approx(PRICE.cost_usd(118, 9, batch=True))


def test_structured_answers_fill_columns_or_become_schema_mismatch_rows() -> None:
    spec = load_spec("tags")
    config = CaptionConfig(request=CONFIG.request, endpoint=CONFIG.endpoint, price=PRICE,
                           run_id="run-1", structured=spec)
    metas = [_meta("ok", "/p/ok.jpg"), _meta("no", "/p/no.jpg"), _meta("no", "/p/no2.jpg")]
    lines = [_answer("ok", json.dumps({"tags": ["cat", "mat"]})), _answer("no", "a cat")]
    captions, errors = shard_rows(config, metas, lines, "completed")
    assert [(r["uri"], r["tags"]) for r in captions] == [("/p/ok.jpg", ["cat", "mat"])]
    assert [(e["uri"], e["code"]) for e in errors] == [("/p/no.jpg", "schema_mismatch"),
                                                       ("/p/no2.jpg", "schema_mismatch")]
    assert errors[0]["cost_usd"] > 0 and errors[1]["cost_usd"] is None, "billed once"


def test_the_run_record_rebuilds_the_same_row_settings_after_a_json_round_trip() -> None:
    config = CaptionConfig(request=CONFIG.request, endpoint=CONFIG.endpoint, price=PRICE,
                           run_id="run-9", structured=load_spec("ocr"))
    record = json.loads(json.dumps(dataclasses.asdict(bs.RunRecord.for_run(config))))
    run = bs.BatchLedger.from_json({"version": bs.VERSION, "runs": [record]}, "test").runs[0]
    rebuilt = run.caption_config()
    assert (rebuilt.price, rebuilt.structured, rebuilt.run_id) == (PRICE, config.structured,
                                                                  "run-9")
    assert rebuilt.request.model == "gpt-4.1-nano"


def test_a_version_1_ledger_is_read_with_its_rows_settings() -> None:
    # batches.json as beam-caption 0.1 wrote it: model, prompt, price and schema under "rows".
    old = {"version": 1, "runs": [{
        "run_id": "run-1", "created_at": "t", "endpoint": {"base_url": "http://127.0.0.1:1/v1"},
        "rows": {"model": "gpt-4.1-nano", "prompt": "Say it.", "structured": None,
                 "price": dataclasses.asdict(PRICE),
                 "run_info": {"run_id": "run-1", "max_side": 512}},
        "supersede": [], "state": "submitted", "shards": []}]}
    [run] = bs.BatchLedger.from_json(old, "old batches.json").runs
    assert (run.info["model"], run.info["max_side"], run.caption_config().price) == (
        "gpt-4.1-nano", 512, PRICE)
