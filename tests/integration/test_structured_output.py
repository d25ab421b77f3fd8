"""--schema end to end: typed columns DuckDB reads, and schema_mismatch rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_caption.simulator import running_simulator
from tests.contract.schemas import validator
from tests.integration.pipeline_helpers import IN_MEMORY, logged_requests, read_rows, run_cli

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DUCKDB_TYPES = {
    "tags": {"tags": "VARCHAR[]"},
    "objects": {"objects": "STRUCT(\"name\" VARCHAR, count BIGINT)[]"},
    "ocr": {"has_text": "BOOLEAN", "text": "VARCHAR"},
    "moderation": {"flagged": "BOOLEAN", "categories": "VARCHAR[]", "reason": "VARCHAR"},
    "alt-text": {"alt_text": "VARCHAR"},
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "requests.jsonl"
    with running_simulator(log_path=str(log)) as handle:
        yield handle, log


@pytest.mark.parametrize("name", sorted(DUCKDB_TYPES))
def test_built_in_schemas_become_typed_columns(name: str, sim, tmp_path: Path) -> None:
    sim, log = sim
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "out"
    code = run_cli("run", "--input", str(SAMPLES / "*.jpg"), "--output", str(out),
                   "--base-url", sim.base_url, "--schema", name, *IN_MEMORY)
    assert code == 0
    rows = read_rows(out, "captions")
    assert len(rows) == len(list(SAMPLES.glob("*.jpg")))
    assert read_rows(out, "errors") == []
    described = duckdb.connect().execute(
        f"describe select * from '{out}/captions-*.parquet'").fetchall()
    types = {r[0]: r[1] for r in described}
    for column, expected in DUCKDB_TYPES[name].items():
        assert types[column] == expected, (column, types[column])
    first = duckdb.connect().execute(
        f"select {', '.join(DUCKDB_TYPES[name])} from '{out}/captions-*.parquet' limit 1"
    ).fetchone()
    assert all(value is not None for value in first)
    body = logged_requests(log)[-1]
    validator("CreateChatCompletionRequest").validate(body)
    assert body["response_format"]["json_schema"]["strict"] is True


def test_answers_that_do_not_validate_become_schema_mismatch_rows(sim, tmp_path: Path) -> None:
    sim, log = sim
    # Prompt mode against a model that ignores the instruction: every answer is prose.
    out = tmp_path / "out"
    sim.update(ignore_json_prompts=True)
    try:
        code = run_cli("run", "--input", str(SAMPLES / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--schema", "tags", "--schema-mode",
                       "prompt", *IN_MEMORY)
    finally:
        sim.update(ignore_json_prompts=False)
    assert code == 0
    errors = read_rows(out, "errors")
    assert read_rows(out, "captions") == []
    assert {e["code"] for e in errors} == {"schema_mismatch"}
    assert all(e["cost_usd"] > 0 for e in errors), "the failed answers were billed: say so"
    body = logged_requests(log)[-1]
    assert "response_format" not in body
    assert "JSON Schema" in body["messages"][-1]["content"][0]["text"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_prompt_mode_answers_are_parsed_into_the_schemas_columns(sim, tmp_path: Path,
                                                                 provider: str) -> None:
    sim, _ = sim
    # A model that follows the prompt's instruction (the README's way for Anthropic and Gemini).
    models = {"openai": "gpt-5.4-nano", "anthropic": "claude-haiku-4-5",
              "gemini": "gemini-2.5-flash-lite"}
    out = tmp_path / "out"
    code = run_cli("run", "--input", str(SAMPLES / "*.jpg"), "--output", str(out),
                   "--provider", provider, "--model", models[provider], "--base-url",
                   sim.base_url if provider == "openai" else sim.root_url,
                   "--schema", "tags", "--schema-mode", "prompt", *IN_MEMORY)
    assert code == 0
    rows = read_rows(out, "captions")
    assert len(rows) == len(list(SAMPLES.glob("*.jpg"))) and read_rows(out, "errors") == []
    assert all(row["tags"] for row in rows)

