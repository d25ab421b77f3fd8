"""WriteCaptions given branches of rows instead of one PCollection each: every branch written and
tallied where its rows are (no Flatten, which the local runner materializes in the launcher),
one table and one summary in the end; and the launcher's preview reading only what it shows."""

from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_caption.api.ratelimits import RateLimitInfo
from beam_caption.api.response import ChatResult
from beam_caption.api.usage import Usage
from beam_caption.config import RunInfo
from beam_caption.pipeline import rows
from beam_caption.pipeline.outputs import first_rows, stop_message
from beam_caption.pipeline.sinks import WriteCaptions
from tests.integration.pipeline_helpers import read_rows, read_summary

RUN = RunInfo(run_id="20261129T000000Z-branch", model="m", prompt="p", base_url="http://x",
              max_side=512)


def caption(i: int, cost: float = 1e-5) -> dict:
    """A caption row for /p/<i>.jpg."""
    result = ChatResult(f"caption {i}", "stop", f"req-{i}", "m", Usage(100, 10, 110),
                        RateLimitInfo())
    image = {"uri": f"/p/{i:04d}.jpg", "image_id": f"{i:064x}", "width": 10, "height": 10,
             "sent_width": 10, "sent_height": 10, "media_type": "image/jpeg"}
    return rows.caption_row(image, request_key=f"k{i}", result=result, model="m",
                            run_id=RUN.run_id, cost_usd=cost, estimated_prompt_tokens=100,
                            attempts=1, latency_ms=5.0)


def error(i: int, stage: str = "decode", message: str = "bad bytes") -> dict:
    """An error row for /e/<i>.jpg."""
    return rows.error_row(uri=f"/e/{i}.jpg", stage=stage, code="decode_failed", message=message,
                          run_id=RUN.run_id)


def write(output: Path, captions, errors, notes=()) -> None:
    with beam.Pipeline(runner=FnApiRunner()) as p:
        def make(name: str, items: list) -> beam.PCollection:
            return p | name >> beam.Create(items, reshuffle=False)

        branches = (tuple(make(f"C{i}", b) for i, b in enumerate(captions)),
                    tuple(make(f"E{i}", b) for i, b in enumerate(errors)),
                    tuple(make(f"N{i}", b) for i, b in enumerate(notes)))
        _ = branches | WriteCaptions(str(output), RUN)


def test_branches_make_one_table_and_one_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, captions=[[caption(i) for i in range(30)], [caption(i) for i in range(30, 45)]],
          errors=[[error(1)], [error(2, stage="request")], []],
          notes=[[("skipped", {"uri": "/p/x.AAE", "kind": "aae_sidecar"})],
                 [("saved", {"usd": 2e-5})]])
    assert sorted(r["uri"] for r in read_rows(out, "captions")) == [
        f"/p/{i:04d}.jpg" for i in range(45)]
    assert sorted(r["uri"] for r in read_rows(out, "errors")) == ["/e/1.jpg", "/e/2.jpg"]
    # The empty third error branch made no file; each other branch has its own.
    assert len(list(out.glob("errors-*.parquet"))) == 2
    assert len(list(out.glob("captions-*.parquet"))) == 2
    # Beam's sink deletes "<its prefix>-*-of-<shards>" before finalizing: no other branch's
    # file may match the first branch's prefix (a resumed run lost its carried rows so).
    first = [p.name for p in out.glob(f"captions-{RUN.run_id}-*")]
    assert len(first) == 1 and all("-part" not in name for name in first)
    summary = read_summary(out)
    assert (summary["captions"], summary["errors"]) == (45, 2)
    assert summary["cost_usd"] == round(45 * 1e-5, 8)
    assert summary["skipped"] == {"aae_sidecar": 1}
    assert summary["near_dedupe"]["requests_saved"] == 1
    assert sorted(summary["files"]["captions"]) == sorted(
        p.name for p in out.glob("captions-*.parquet"))


def test_no_rows_at_all_still_leave_one_readable_file_per_table(tmp_path: Path,
                                                                caplog) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        write(out, captions=[[], []], errors=[[], []])
    # An empty extra branch writes no file on purpose: Beam's warning about it is not shown.
    assert not [r for r in caplog.records if "No shards found" in r.getMessage()]
    assert len(list(out.glob("captions-*.parquet"))) == 1
    assert len(list(out.glob("errors-*.parquet"))) == 1
    assert read_rows(out, "captions") == [] and read_summary(out)["images"] == 0


def test_the_preview_reads_the_first_rows_by_uri_across_files_and_batches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 20,000 rows in two files, the smallest uris in the second.
    write(out, captions=[[caption(i) for i in range(10_000, 20_000)],
                         [caption(i) for i in range(10_000)]],
          errors=[[error(7, stage="request", message="not sent: the spend cap was reached")]])
    first = first_rows(str(out), "captions", ["uri", "caption", "no_such_column"], 3)
    assert first == [{"uri": f"/p/{i:04d}.jpg", "caption": f"caption {i}"} for i in range(3)]
    assert first_rows(str(out), "captions", ["caption"], 3) == [], "no uri column: no order"
    assert stop_message(str(out)) == "the spend cap was reached"
    # Each file was written in row groups the preview reads one batch at a time.
    assert all(pq.ParquetFile(p).metadata.num_rows == 10_000 for p in out.glob("captions-*"))
