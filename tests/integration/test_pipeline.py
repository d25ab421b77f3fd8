"""End to end: a folder of valid and broken images -> the real pipeline on the FnApiRunner -> the
simulator -> Parquet read back. Every input ends in exactly one row of exactly one table."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from beam_caption.inputs.images import sent_size
from beam_caption.simulator import running_simulator
from tests.contract.schemas import validator
from tests.fixtures.images import make_image_corpus
from tests.integration.pipeline_helpers import (
    IN_MEMORY,
    logged_requests,
    read_rows,
    read_summary,
    run_cli,
)

pytestmark = pytest.mark.slow

SECRET = "sk-test-" + "k3y" * 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_image_corpus(folder)


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "requests.jsonl"


@pytest.fixture(scope="module")
def sim(sim_log: Path):
    with running_simulator(api_key=SECRET, log_path=str(sim_log)) as handle:
        yield handle


@pytest.fixture(scope="module")
def corpus_run(corpus, sim, tmp_path_factory: pytest.TempPathFactory):
    """One run over the whole corpus, shared by the assertions below."""
    folder, _ = corpus
    out = tmp_path_factory.mktemp("out")
    sim.reset()
    os.environ["BC_TEST_KEY"] = SECRET
    try:
        code = run_cli("run", "--input", str(folder / "*"), "--output", str(out),
                       "--base-url", sim.base_url, "--api-key-env", "BC_TEST_KEY",
                       "--overwrite", *IN_MEMORY)
    finally:
        del os.environ["BC_TEST_KEY"]
    return code, out, sim.stats()


def test_every_input_has_exactly_one_row(corpus, corpus_run) -> None:
    folder, expected = corpus
    code, out, _ = corpus_run
    assert code == 0
    captions = read_rows(out, "captions")
    errors = read_rows(out, "errors")
    caption_names = [Path(r["uri"]).name for r in captions]
    error_codes = {Path(r["uri"]).name: r["code"] for r in errors}
    assert len(caption_names) == len(set(caption_names))
    assert len(error_codes) == len(errors)
    valid = {name for name, want in expected.items() if want is None}
    broken = {name: want for name, want in expected.items() if want is not None}
    assert set(caption_names) == valid
    assert error_codes == broken
    assert set(caption_names) | set(error_codes) == {p.name for p in folder.iterdir()}


def test_caption_rows_carry_usage_and_sizes(corpus_run) -> None:
    _, out, stats = corpus_run
    rows = read_rows(out, "captions")
    for row in rows:
        assert row["caption"]
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        assert max(row["sent_width"], row["sent_height"]) <= 512
        assert row["attempts"] == 1 and row["latency_ms"] > 0
        assert row["cost_usd"] > 0 and row["request_id"]
        assert len(row["image_id"]) == 64 and len(row["request_key"]) == 64
        assert row["created_at"].tzinfo is not None
    # The 12 MP photo was shrunk (decoded at 1/8, 504 px), and its original size recorded.
    big = [r for r in rows if r["width"] * r["height"] >= 12_000_000]
    assert big and all((r["sent_width"], r["sent_height"]) == sent_size(
        r["width"], r["height"], 512, jpeg=True) == (504, 378) for r in big)
    # The simulator billed exactly one answer per image, and the rows add up to its ledger.
    assert sorted(stats["successes_by_image"].values()) == [1] * len(rows)
    billed_prompt = stats["tokens"]["realtime"]["prompt"]
    assert sum(r["prompt_tokens"] for r in rows) == billed_prompt


def test_exif_rotation_swaps_the_sent_dimensions(corpus_run) -> None:
    _, out, _ = corpus_run
    rotated = [r for r in read_rows(out, "captions") if "exif" in Path(r["uri"]).name.lower()]
    assert rotated, "the corpus has an EXIF-rotated image"
    for row in rotated:
        assert row["height"] > row["width"], "orientation 6 turns a landscape file upright"
        assert row["sent_height"] > row["sent_width"]


def test_summary_matches_the_tables(corpus_run) -> None:
    _, out, _ = corpus_run
    summary = read_summary(out)
    captions, errors = read_rows(out, "captions"), read_rows(out, "errors")
    assert summary["captions"] == len(captions) and summary["errors"] == len(errors)
    assert summary["tokens"]["prompt"] == sum(r["prompt_tokens"] for r in captions)
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in captions))
    assert summary["engine"]["requests"] == len(captions)
    assert summary["images_per_second"] > 0


def test_requests_validate_against_the_official_schema(corpus_run, sim_log: Path) -> None:
    requests = logged_requests(sim_log)
    assert requests
    check = validator("CreateChatCompletionRequest")
    for body in requests:
        check.validate(body)
        content = body["messages"][-1]["content"]
        assert [part["type"] for part in content] == ["text", "image_url"]
        assert "max_tokens" not in body and body["max_completion_tokens"] == 60


def test_the_key_never_reaches_output_or_logs(corpus_run, caplog) -> None:
    _, out, _ = corpus_run
    for path in out.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name
    assert SECRET not in caplog.text


def test_duckdb_reads_both_tables_without_casts(corpus_run) -> None:
    duckdb = pytest.importorskip("duckdb")
    _, out, _ = corpus_run
    con = duckdb.connect()
    n, cost = con.execute(
        f"select count(*), sum(cost_usd) from '{out}/captions-*.parquet' where caption <> ''"
    ).fetchone()
    assert n == len(read_rows(out, "captions")) and cost > 0
    described = con.execute(f"describe select * from '{out}/captions-*.parquet'").fetchall()
    types = {row[0]: row[1] for row in described}
    assert types["created_at"].startswith("TIMESTAMP") and types["prompt_tokens"] == "BIGINT"
    codes = con.execute(
        f"select code, count(*) from '{out}/errors-*.parquet' group by 1").fetchall()
    assert codes


def test_manifest_csv_with_ids(corpus, sim, tmp_path: Path) -> None:
    folder, expected = corpus
    valid = sorted(name for name, want in expected.items() if want is None)[:3]
    manifest = tmp_path / "images.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "id"])
        for i, name in enumerate(valid):
            writer.writerow([str(folder / name), f"id-{i}"])
    out = tmp_path / "out"
    code = run_cli("run", "--manifest", str(manifest), "--output", str(out),
                   "--base-url", sim.base_url, "--api-key-env", "NO_SUCH_VAR_FOR_TEST",
                   *IN_MEMORY)
    # The simulator requires SECRET: every request is refused with 401 and the run stops early.
    assert code == 1
    errors = read_rows(out, "errors")
    assert {r["code"] for r in errors} == {"http_401"}
    assert len(errors) == len(valid)


def test_dedupe_sends_identical_images_once(corpus, sim, tmp_path: Path) -> None:
    folder, expected = corpus
    name = sorted(n for n, want in expected.items() if want is None)[0]
    copies = tmp_path / "copies"
    copies.mkdir()
    for i in range(4):
        (copies / f"copy{i}{Path(name).suffix}").write_bytes((folder / name).read_bytes())
    out = tmp_path / "out"
    sim.reset()
    os.environ["BC_TEST_KEY"] = SECRET
    try:
        code = run_cli("run", "--input", str(copies / "*"), "--output", str(out),
                       "--base-url", sim.base_url, "--api-key-env", "BC_TEST_KEY", *IN_MEMORY)
    finally:
        del os.environ["BC_TEST_KEY"]
    assert code == 0
    rows = read_rows(out, "captions")
    assert len(rows) == 4 and len({r["caption"] for r in rows}) == 1
    paid = [r for r in rows if not r["deduplicated"]]
    assert len(paid) == 1
    assert sim.stats()["requests"]["total"] == 1
    # Every copy keeps the real usage and cost, and names the image whose request paid.
    assert {r["deduplicated_from"] for r in rows if r["deduplicated"]} == {paid[0]["uri"]}
    assert {r["cost_usd"] for r in rows} == {paid[0]["cost_usd"]} and paid[0]["cost_usd"] > 0
    summary = read_summary(out)
    assert summary["deduplicated"] == 3
    assert summary["cost_usd"] == pytest.approx(paid[0]["cost_usd"]), "the money counts once"


def test_multi_process_runner_gives_the_same_rows(corpus, corpus_run, sim, tmp_path) -> None:
    folder, _ = corpus
    _, first_out, _ = corpus_run
    out = tmp_path / "out"
    os.environ["BC_TEST_KEY"] = SECRET
    try:
        code = run_cli("run", "--input", str(folder / "*"), "--output", str(out),
                       "--base-url", sim.base_url, "--api-key-env", "BC_TEST_KEY",
                       "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    finally:
        del os.environ["BC_TEST_KEY"]
    assert code == 0

    def by_uri(rows):
        return {r["uri"]: (r["caption"], r["image_id"], r["request_key"]) for r in rows}

    assert by_uri(read_rows(out, "captions")) == by_uri(read_rows(first_out, "captions"))
    assert {r["uri"]: r["code"] for r in read_rows(out, "errors")} == {
        r["uri"]: r["code"] for r in read_rows(first_out, "errors")}
    assert json.loads((out / "run-summary.json").read_text())["captions"] > 0
