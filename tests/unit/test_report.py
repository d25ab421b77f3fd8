"""report/ on hand-made Parquet shards (totals.py, text.py, plots.py, thumbnails.py, gallery.py):
the totals must equal the sums DuckDB computes over the same files, and the page must be
self-contained and escape what a model wrote."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from beam_caption.cli import main as cli_main
from beam_caption.errors import ConfigError
from beam_caption.inputs.images import DCT_SLACK
from beam_caption.pipeline.schema import CAPTIONS_SCHEMA, ERRORS_SCHEMA
from beam_caption.report import gallery, plots, thumbnails
from beam_caption.report.table import text_table
from beam_caption.report.text import format_report
from beam_caption.report.totals import build_report, load_tables, write_report_json

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'


def caption_row(i: int, *, run: str, start: datetime, batch: bool = False, dedup: bool = False,
                cost: float | None = 0.0001, attempts: int = 1, uri: str | None = None,
                caption: str | None = None) -> dict[str, Any]:
    """One captions row; numbers vary with i so sums and quantiles are not trivial."""
    return {
        "image_id": hashlib.sha256(f"img{i}".encode()).hexdigest(),
        "uri": uri or f"/photos/p{i:03d}.jpg", "source_id": None,
        "caption": caption or f"photo number {i} of a {'red' if i % 2 else 'blue'} car",
        "model": "gpt-5.4-nano", "prompt_tokens": 400 + i, "completion_tokens": 10 + i % 7,
        "cached_tokens": i % 3, "reasoning_tokens": i % 2, "total_tokens": 410 + i + i % 7,
        "estimated_prompt_tokens": 400, "cost_usd": 0.0 if dedup else cost, "batch": batch,
        "deduplicated": dedup, "width": 640, "height": 480, "sent_width": 512,
        "sent_height": 384, "bytes": 1000 + i, "finish_reason": "length" if i == 3 else "stop",
        "request_id": f"req{i}", "attempts": 0 if dedup else attempts,
        "latency_ms": None if dedup else 20.0 + (i * 37) % 101, "request_key": f"key{i}",
        "run_id": run, "created_at": start + timedelta(seconds=i)}


def error_row(i: int, *, run: str, start: datetime, code: str, message: str,
              attempts: int | None = 0, stage: str = "request") -> dict[str, Any]:
    """One errors row."""
    return {"uri": f"/photos/bad{i:03d}.jpg", "image_id": None, "stage": stage, "code": code,
            "message": message, "attempts": attempts, "request_key": None, "run_id": run,
            "created_at": start + timedelta(seconds=i)}


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    """An output two runs wrote to: run A realtime (one row unpriced), run B a day later with
    batch rows and deduplicated rows (one realtime, two batch); errors in both, some with the
    same message."""
    later = T0 + timedelta(days=1)
    run_a = [caption_row(i, run="A", start=T0, attempts=1 + (i % 4 == 0),
                         cost=None if i == 5 else 0.0001 + i * 1e-6) for i in range(12)]
    run_b = [caption_row(i, run="B", start=later, batch=True, cost=0.00005) for i in range(12, 20)]
    run_b += [caption_row(i, run="B", start=later, dedup=True, batch=i != 20)
              for i in range(20, 23)]
    errors_a = [error_row(i, run="A", start=T0, code="http_500", message="server error",
                          attempts=3) for i in range(3)]
    errors_b = [error_row(i, run="B", start=later, code="decode_error", stage="decode",
                          message="cannot identify image file", attempts=None) for i in (3, 4)]
    errors_b.append(error_row(5, run="B", start=later, code="http_500", message="server error",
                              attempts=2))
    write(tmp_path / "captions-00000-of-00002.parquet", run_a[:7], CAPTIONS_SCHEMA)
    write(tmp_path / "captions-00001-of-00002.parquet", run_a[7:], CAPTIONS_SCHEMA)
    write(tmp_path / "captions-B-00000-of-00001.parquet", run_b, CAPTIONS_SCHEMA)
    write(tmp_path / "errors-00000-of-00001.parquet", errors_a, ERRORS_SCHEMA)
    write(tmp_path / "errors-B-00000-of-00001.parquet", errors_b, ERRORS_SCHEMA)
    return tmp_path


def write(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """Rows as one zstd Parquet file, as the pipeline writes them."""
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")


def sql(output: Path, query: str) -> tuple:
    """One row of `query` with {c} and {e} standing for the captions and errors files."""
    return duckdb.execute(query.format(c=f"'{output}/captions-*.parquet'",
                                   e=f"'{output}/errors-*.parquet'")).fetchone()


def make_report(output: Path, **kwargs: Any) -> dict[str, Any]:
    captions, errors, _ = load_tables(str(output))
    return build_report(captions, errors, output=str(output), **kwargs)


def test_totals_equal_duckdb_sums_over_every_shard(two_runs: Path) -> None:
    report = make_report(two_runs)
    n_captions, n_dedup = sql(two_runs, "select count(*), count(*) filter (deduplicated) from {c}")
    (n_errors,) = sql(two_runs, "select count(*) from {e}")
    assert (report["captions"], report["deduplicated"], report["errors"]) == (
        n_captions, n_dedup, n_errors) == (23, 3, 6)
    assert report["images"] == 29
    billed = sql(two_runs, """select sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens),
        sum(reasoning_tokens), sum(estimated_prompt_tokens), sum(cost_usd),
        count(*) filter (cost_usd is null) from {c} where not deduplicated""")
    tokens = report["tokens"]
    assert [tokens[k] for k in ("prompt", "completion", "cached", "reasoning",
                                "estimated_prompt")] == list(billed[:5])
    assert tokens["total"] == billed[0] + billed[1]
    assert report["cost_usd"] == pytest.approx(billed[5], abs=1e-8)
    assert report["unpriced_captions"] == billed[6] == 1
    assert report["cost_per_1000_images_usd"] == pytest.approx(billed[5] / 23 * 1000, abs=1e-6)


def test_realtime_and_batch_are_split_by_the_batch_column(two_runs: Path) -> None:
    modes = make_report(two_runs)["by_mode"]
    for mode, flag in (("realtime", False), ("batch", True)):
        rows, dedup, prompt, cost = sql(two_runs, f"""select count(*),
            count(*) filter (deduplicated), sum(prompt_tokens) filter (not deduplicated),
            sum(cost_usd) filter (not deduplicated) from {{c}} where batch = {flag}""")
        assert modes[mode]["captions"] == rows
        assert modes[mode]["deduplicated"] == dedup
        assert modes[mode]["prompt_tokens"] == prompt
        assert modes[mode]["cost_usd"] == pytest.approx(cost, abs=1e-8)
    assert (modes["batch"]["captions"], modes["batch"]["deduplicated"]) == (10, 2)
    assert (modes["realtime"]["captions"], modes["realtime"]["deduplicated"]) == (13, 1)


def test_latency_retries_and_errors(two_runs: Path) -> None:
    report = make_report(two_runs)
    p50, p95, p99, mean = sql(two_runs, """select quantile_cont(latency_ms, 0.5),
        quantile_cont(latency_ms, 0.95), quantile_cont(latency_ms, 0.99), avg(latency_ms)
        from {c} where not deduplicated""")
    latency = report["latency_ms"]
    assert (latency["p50"], latency["p95"], latency["p99"], latency["mean"]) == (
        round(p50, 1), round(p95, 1), round(p99, 1), round(mean, 1))
    (caption_retries,) = sql(two_runs, "select sum(greatest(attempts - 1, 0)) from {c}")
    (error_retries,) = sql(two_runs, "select sum(greatest(coalesce(attempts, 0) - 1, 0)) from {e}")
    assert report["retries"]["total"] == caption_retries + error_retries == 3 + 3 * 2 + 1
    assert report["retries"]["images_retried"] == 3 + 4
    assert report["errors_by_code"] == {"http_500": 4, "decode_error": 2}
    top = report["top_errors"][0]
    assert (top["code"], top["message"], top["count"]) == ("http_500", "server error", 4)
    assert top["example_uris"] == ["/photos/bad000.jpg", "/photos/bad001.jpg",
                                   "/photos/bad002.jpg"]


def test_throughput_leaves_out_the_idle_day_between_runs(two_runs: Path) -> None:
    report = make_report(two_runs, summary={"run_id": "B", "wall_seconds": 40.0})
    runs = {run["run_id"]: run for run in report["runs"]}
    # Run A: captions at T0+0..11 s and errors at T0+0..2 s; run B: rows at +3..22 s a day later.
    assert (runs["A"]["rows"], runs["A"]["seconds"]) == (15, 11.0)
    assert (runs["B"]["rows"], runs["B"]["seconds"]) == (14, 19.0)
    assert [run["run_id"] for run in report["runs"]] == ["A", "B"]
    speed = report["throughput"]
    assert speed["active_seconds"] == 30.0
    assert speed["images_per_second"] == round((14 + 13) / 30.0, 3)
    assert speed["wall_seconds"] is None  # run A's wall time is unknown
    assert runs["B"]["wall_seconds"] == 40.0


def test_json_is_written_and_the_table_printed(two_runs: Path, tmp_path: Path) -> None:
    report = make_report(two_runs)
    target = tmp_path / "nested" / "r.json"
    write_report_json(report, str(target))
    assert json.loads(target.read_text()) == report
    text = format_report(report)
    for fragment in ("29 (23 captions, 6 errors, 3 deduplicated)", "1 captions without a price",
                     "http_500", "cannot identify image file", "realtime", "batch"):
        assert fragment in text, fragment
    # Billed cost: run A 11 priced rows at 0.0001 + i * 1e-6 (i = 0..11 but 5) = 0.0011 + 61e-6,
    # run B 8 rows at 0.00005 = 0.0004: $0.001561 in all, / 23 captions * 1,000 = $0.06787;
    # realtime 13 captions $0.001161 ($0.08931 per 1,000), batch 10 captions $0.0004000 ($0.04000).
    assert "$0.001561 (1 captions without a price)" in text
    assert "cost per 1,000 images  $0.06787" in text
    assert [ln.split()[-2:] for ln in text.splitlines() if ln.startswith(("realtime", "batch"))
            ] == [["$0.001161", "$0.08931"], ["$0.0004000", "$0.04000"]]


def test_one_text_table_layout_for_report_and_estimate() -> None:
    # report: left-aligned, a rule under the header; estimate: figures right-aligned, "> " marks.
    assert text_table(["name", "n"], [["a", "1"], ["long name", "22"]], rule=True).split("\n") == [
        "name       n",
        "---------  --",
        "a          1",
        "long name  22"]
    assert text_table(["model", "cost"], [["a", "$1.00"], ["bb", "$10.00"]], numbers=True,
                      marks=[False, True]).split("\n") == [
        "  model    cost",
        "  a       $1.00",
        "> bb     $10.00"]


def test_an_output_without_parquet_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no captions"):
        load_tables(str(tmp_path))


def test_only_errors_still_reports(tmp_path: Path) -> None:
    write(tmp_path / "errors-00000-of-00001.parquet",
          [error_row(0, run="A", start=T0, code="not_found", message="file not found")],
          ERRORS_SCHEMA)
    report = make_report(tmp_path)
    assert (report["images"], report["captions"], report["cost_usd"]) == (1, 0, 0.0)
    assert report["latency_ms"]["p50"] is None
    assert report["throughput"]["images_per_second"] is None
    assert "not_found" in format_report(report)


# ---------------------------------------------------------------------------------------------
# plots


def svg_numbers(svg: str, tag: str, attribute: str) -> list[float]:
    return [float(v) for v in re.findall(rf'<{tag} [^>]*{attribute}="([-0-9.]+)"', svg)]


def test_histogram_counts_and_tail() -> None:
    svg = plots.histogram_svg([1, 2, 2, 3, 3, 3, 100], bins=3, upper=3)
    heights = svg_numbers(svg, "rect", "height")
    assert len(heights) == 3
    # counts 1, 2, 3 + the one value above `upper`, scaled to the tallest bar
    assert heights[0] / heights[2] == pytest.approx(1 / 4, abs=0.01)
    assert heights[1] / heights[2] == pytest.approx(2 / 4, abs=0.01)
    assert "last bar includes 1 above" in svg
    one = plots.histogram_svg([5.0, 5.0])
    assert len(svg_numbers(one, "rect", "height")) == 1
    assert plots.histogram_svg([]) == plots.empty_plot()


def test_scatter_thins_and_places_points() -> None:
    svg = plots.scatter_svg([(i, 2 * i) for i in range(5000)])
    assert len(svg_numbers(svg, "circle", "cx")) == plots.MAX_POINTS
    small = plots.scatter_svg([(0, 0), (10, 100)])
    xs, ys = svg_numbers(small, "circle", "cx"), svg_numbers(small, "circle", "cy")
    assert xs[0] < xs[1] and ys[0] > ys[1]  # up and to the right
    assert plots.scatter_svg([]) == plots.empty_plot()


# ---------------------------------------------------------------------------------------------
# gallery


class PageParser(HTMLParser):
    """Collects caption texts, image sources, the CSP and the inline style and script."""

    def __init__(self) -> None:
        super().__init__()
        self.captions: list[str] = []
        self.srcs: list[str] = []
        self.csp = ""
        self.blocks: dict[str, str] = {}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "p" and a.get("class") == "caption":
            self._in = "caption"
            self.captions.append("")
        elif tag in ("style", "script"):
            self._in = tag
            self.blocks[tag] = ""
        elif tag == "img":
            self.srcs.append(a["src"] or "")
        elif tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a["content"] or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "style", "script"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "caption":
            self.captions[-1] += data
        elif self._in in ("style", "script"):
            self.blocks[self._in] += data


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def test_sample_is_deterministic_spread_and_bounded(two_runs: Path) -> None:
    captions, _, _ = load_tables(str(two_runs))
    first = thumbnails.sample_captions(captions, 5)
    assert first == thumbnails.sample_captions(captions.take(list(range(22, -1, -1))), 5)
    assert len(first) == 5 and first == sorted(first, key=lambda r: r["uri"])
    assert len(thumbnails.sample_captions(captions, 0)) == 23
    assert len(thumbnails.sample_captions(captions, 100)) == 23


def test_page_escapes_captions_and_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    uri = str(SAMPLES / "coffee.jpg")
    rows = [caption_row(0, run="A", start=T0, uri=uri, caption=EVIL),
            caption_row(1, run="A", start=T0, uri=str(tmp_path / "gone.jpg"))]
    write(tmp_path / "captions-00000-of-00001.parquet", rows, CAPTIONS_SCHEMA)
    report = make_report(tmp_path)
    captions, errors, _ = load_tables(str(tmp_path))
    page = gallery.build_gallery(report, captions, errors)
    assert "<script>alert" not in page and "<img src=x" not in page
    parsed = parse(page)
    assert EVIL in parsed.captions  # shown as text, exactly
    assert page.count('class="ph"') == 1  # the missing file gets a placeholder
    assert len(parsed.srcs) == 1 and parsed.srcs[0].startswith("data:image/jpeg;base64,")
    thumb = Image.open(io.BytesIO(base64.b64decode(parsed.srcs[0].split(",", 1)[1])))
    # A JPEG is thumbnailed at its DCT scale when that lands within reach of the side.
    assert thumbnails.THUMB_SIDE * DCT_SLACK <= max(thumb.size) <= thumbnails.THUMB_SIDE
    # Nothing to fetch: the CSP forbids it, and only our own style and script (by hash) run.
    assert "default-src 'none'" in parsed.csp and "img-src data:" in parsed.csp
    for tag in ("style", "script"):
        digest = base64.b64encode(hashlib.sha256(parsed.blocks[tag].encode()).digest()).decode()
        assert f"'sha256-{digest}'" in parsed.csp
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(|@import""", page)


def test_a_thousand_photo_page_stays_under_five_mb(tmp_path: Path) -> None:
    # Real photos (the bundled samples), measured per card, then scaled to 1,000 cards.
    photos = sorted(SAMPLES.glob("*.jpg"))
    rows = [caption_row(i, run="A", start=T0, uri=str(p)) for i, p in enumerate(photos)]
    write(tmp_path / "captions-00000-of-00001.parquet", rows, CAPTIONS_SCHEMA)
    report = make_report(tmp_path)
    captions, errors, _ = load_tables(str(tmp_path))
    full = len(gallery.build_gallery(report, captions, errors).encode())
    empty = len(gallery.build_gallery(report, captions.slice(0, 0), errors).encode())
    per_card = (full - empty) / len(photos)
    assert 1000 < per_card < 8000
    assert empty + 1000 * per_card < 5_000_000


def test_report_command_writes_json_and_page(two_runs: Path, tmp_path: Path, capsys) -> None:
    page = tmp_path / "site" / "report.html"
    assert cli_main(["report", str(two_runs), "--html", str(page), "--sample", "4"]) == 0
    out = capsys.readouterr().out
    assert f"report.json: {two_runs / 'report.json'}" in out
    assert f"file://{page}" in out and "4 of 23 captions" in out
    assert json.loads((two_runs / "report.json").read_text())["images"] == 29
    assert len(parse(page.read_text()).captions) == 4
    other = tmp_path / "elsewhere.json"
    assert cli_main(["report", str(two_runs), "--json", str(other)]) == 0
    assert json.loads(other.read_text())["captions"] == 23


def test_report_command_on_a_missing_output_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    assert cli_main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no captions-*.parquet" in err[0]
