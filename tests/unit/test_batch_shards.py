"""Batch request lines and the shard writer: both file limits, dedupe, sidecars."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_caption.api.request import RequestSettings, build_request
from beam_caption.batch.shards import BatchItem, LineTooLarge, ShardWriter, batch_item
from beam_caption.config import CaptionConfig
from beam_caption.cost.pricing import load_prices
from beam_caption.engine.settings import EndpointConfig
from beam_caption.inputs.images import PrepareSettings, prepare_image
from tests.integration.simclient import image_bytes


def _item(key: str, size: int, uri: str | None = None) -> BatchItem:
    meta = {"request_key": key, "uri": uri or f"/p/{key}.jpg", "image_id": key * 2,
            "source_id": None, "width": 10, "height": 10, "sent_width": 10, "sent_height": 10,
            "bytes": 100, "estimated_prompt_tokens": 7}
    return BatchItem(key, b"x" * (size - 1), meta)  # size counts the newline


def _writer(tmp_path: Path, max_lines: int, max_bytes: int) -> ShardWriter:
    return ShardWriter(str(tmp_path), "batch/run1", max_lines, max_bytes)


def test_lines_go_to_a_new_file_when_the_count_limit_would_be_passed(tmp_path: Path) -> None:
    writer = _writer(tmp_path, max_lines=3, max_bytes=10_000)
    for i in range(7):
        writer.add(_item(f"k{i}", 50))
    shards = writer.finish()
    assert [s.lines for s in shards] == [3, 3, 1]
    assert [s.bytes for s in shards] == [150, 150, 50]
    for shard in shards:
        assert (tmp_path / shard.path).stat().st_size == shard.bytes
    assert [s.path for s in shards] == sorted(s.path for s in shards), "names sort in order"


def test_lines_go_to_a_new_file_when_the_byte_limit_would_be_passed(tmp_path: Path) -> None:
    rng = random.Random(5)
    sizes = [rng.randrange(100, 900) for _ in range(60)]
    writer = _writer(tmp_path, max_lines=50_000, max_bytes=2_000)
    for i, size in enumerate(sizes):
        writer.add(_item(f"k{i}", size))
    shards = writer.finish()
    assert sum(s.lines for s in shards) == 60
    assert all(s.bytes <= 2_000 for s in shards)
    files = [(tmp_path / s.path).read_bytes().splitlines(keepends=True) for s in shards]
    assert [len(line) for lines in files for line in lines] == sizes, "every line, in order"
    for full, following in itertools.pairwise(files):
        assert sum(map(len, full)) + len(following[0]) > 2_000, "closed only when needed"


def test_a_repeated_request_is_written_once_and_its_rows_join_that_shard(tmp_path: Path) -> None:
    writer = _writer(tmp_path, max_lines=2, max_bytes=10_000)
    for key, uri in [("a", "/p/1"), ("b", "/p/2"), ("c", "/p/3"), ("a", "/p/4")]:
        writer.add(_item(key, 40, uri))
    first, second = writer.finish()
    assert (first.lines, first.images, second.lines, second.images) == (2, 3, 1, 1)
    rows = pq.read_table(tmp_path / first.meta).to_pylist()
    assert [(r["request_key"], r["uri"]) for r in rows] == [("a", "/p/1"), ("b", "/p/2"),
                                                            ("a", "/p/4")]
    assert writer.finish() == [], "nothing is left open"


def test_a_request_larger_than_any_file_is_refused(tmp_path: Path) -> None:
    writer = _writer(tmp_path, max_lines=10, max_bytes=100)
    with pytest.raises(LineTooLarge, match="--max-side"):
        writer.add(_item("big", 101))
    writer.add(_item("fits", 100))
    assert [s.lines for s in writer.finish()] == [1]


def test_a_batch_line_is_the_realtime_request_keyed_by_request_key() -> None:
    config = CaptionConfig(request=RequestSettings(model="gpt-4.1-nano", prompt="Say it."),
                           endpoint=EndpointConfig(base_url="http://127.0.0.1:1/v1"),
                           price=load_prices()["gpt-4.1-nano"])
    image = prepare_image("/p/a.jpg", image_bytes(120, 80), PrepareSettings(max_side=64),
                          source_id="id-1")
    item = batch_item(config, image)
    line = json.loads(item.line)
    assert line["custom_id"] == item.request_key == config.request_key(image.image_id)
    assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
    assert line["body"] == build_request(config.request, image.jpeg)
    # 120x80 decoded at 1/2 by libjpeg is 60 px, within reach of 64: sent as it comes.
    assert item.meta["source_id"] == "id-1" and item.meta["sent_width"] == 60
    assert item.meta["estimated_prompt_tokens"] == config.estimated_prompt_tokens(
        (image.sent_width, image.sent_height)) > 0
