"""End to end: two real pipeline runs (FnApiRunner + simulator with seeded 500s) into one output,
then `beam-caption report`: report.json must equal what DuckDB sums over the Parquet files."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from apache_beam.internal.gcp import auth
from apache_beam.io.filesystems import FileSystems
from gcp_storage_emulator.server import create_server

from beam_caption.simulator import running_simulator
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, run_cli

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run 1: the sample photos, one duplicated (-> a deduplicated row) and one broken file (->
    decode_error), against a simulator failing 25% of requests with 500 (-> retries, http_500).
    Run 2: one photo into another folder, whose shards are then moved in beside run 1's, as a
    resumed run leaves them."""
    photos = tmp_path_factory.mktemp("photos")
    for photo in SAMPLES.glob("*.jpg"):
        shutil.copy(photo, photos / photo.name)
    shutil.copy(SAMPLES / "camera.jpg", photos / "camera_again.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    out = tmp_path_factory.mktemp("out")
    with running_simulator(rate_500=0.25, seed=11) as sim:
        assert run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--max-attempts", "3", "--overwrite",
                       *IN_MEMORY) == 0
    second = tmp_path_factory.mktemp("out2")
    assert run_cli("run", "--simulate", "--input", str(SAMPLES / "chelsea.jpg"), "--output",
                   str(second), "--overwrite", *IN_MEMORY) == 0
    for shard in second.glob("*.parquet"):
        shutil.move(shard, out / shard.name.replace("-0", "-run2-0", 1))
    return out


@pytest.fixture(scope="module")
def reported(output: Path) -> tuple[dict[str, Any], Path]:
    page = output / "report.html"
    assert run_cli("report", str(output), "--html", str(page)) == 0
    return json.loads((output / "report.json").read_text()), page


def one(output: Path, query: str) -> tuple:
    return duckdb.execute(query.format(c=f"'{output}/captions-*.parquet'",
                                       e=f"'{output}/errors-*.parquet'")).fetchone()


def test_the_runs_produced_every_case_the_report_counts(reported) -> None:
    report, _ = reported
    assert len(report["runs"]) == 2
    assert report["deduplicated"] >= 1
    assert report["errors_by_code"].get("decode_error") == 1
    assert report["retries"]["total"] > 0


def test_report_json_equals_sums_over_the_parquet_files(output: Path, reported) -> None:
    report, _ = reported
    captions, dedup, prompt, completion, cached, cost = one(output, """select count(*),
        count(*) filter (deduplicated), sum(prompt_tokens) filter (not deduplicated),
        sum(completion_tokens) filter (not deduplicated),
        sum(cached_tokens) filter (not deduplicated),
        sum(cost_usd) filter (not deduplicated) from {c}""")
    (errors,) = one(output, "select count(*) from {e}")
    assert (report["images"], report["captions"], report["errors"], report["deduplicated"]) == (
        captions + errors, captions, errors, dedup)
    assert (report["tokens"]["prompt"], report["tokens"]["completion"],
            report["tokens"]["cached"]) == (prompt, completion, cached)
    assert report["cost_usd"] == pytest.approx(cost, abs=1e-8)
    assert report["cost_per_1000_images_usd"] == pytest.approx(cost / captions * 1000, abs=1e-6)
    (retries,) = one(output, """select sum(r) from (
        select greatest(attempts - 1, 0) r from {c} union all
        select greatest(attempts - 1, 0) from {e})""")
    assert report["retries"]["total"] == retries
    p50, p99 = one(output, """select quantile_cont(latency_ms, 0.5),
        quantile_cont(latency_ms, 0.99) from {c} where not deduplicated""")
    assert (report["latency_ms"]["p50"], report["latency_ms"]["p99"]) == (round(p50, 1),
                                                                          round(p99, 1))
    codes = dict(duckdb.execute(f"select code, count(*) from '{output}/errors-*.parquet' "
                                "group by code").fetchall())
    assert report["errors_by_code"] == codes
    (realtime,) = one(output, "select count(*) from {c} where not batch")
    assert report["by_mode"]["realtime"]["captions"] == realtime == captions


def test_page_holds_every_caption_and_error(output: Path, reported) -> None:
    _, page = reported
    text = page.read_text()
    for row in read_rows(output, "captions"):
        assert html.escape(row["caption"]) in text
    for row in read_rows(output, "errors"):
        assert html.escape(row["uri"]) in text
    assert text.count("data:image/jpeg;base64,") == len(read_rows(output, "captions"))


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Any:
    """gs://captions on a local GCS emulator (in memory, port 0), reached anonymously."""
    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket="captions")
    server.start()
    try:
        port = server._api._httpd.server_address[1]
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        # No credentials exist here: without this Beam retries the look-up for 20-30 s.
        monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
        monkeypatch.setattr(auth._Credentials, "_credentials", None)
        yield "gs://captions"
    finally:
        server.stop()


def test_a_gs_output_is_read_and_written_through_filesystems(output: Path, reported,
                                                             bucket: str) -> None:
    local, _ = reported
    remote = f"{bucket}/run1"
    for path in [*output.glob("*.parquet"), output / "run-summary.json"]:
        with FileSystems.create(f"{remote}/{path.name}") as handle:
            handle.write(path.read_bytes())
    assert run_cli("report", remote, "--html", f"{remote}/report.html", "--sample", "3") == 0
    with FileSystems.open(f"{remote}/report.json") as handle:
        report = json.loads(handle.read())
    assert report["output"] == remote
    assert {k: v for k, v in report.items() if k != "output"} == {
        k: v for k, v in local.items() if k != "output"}
    with FileSystems.open(f"{remote}/report.html") as handle:
        page = handle.read().decode()
    assert page.count('class="card"') == 3 and "data:image/jpeg;base64," in page
