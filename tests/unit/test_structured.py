"""Structured answers: schema loading (built-ins and a file's text; the file read by `run` through
Beam FileSystems), strict checks, Arrow types, answer parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from beam_caption.api.structured import (
    BUILT_IN,
    SchemaMismatch,
    check_strict,
    load_spec,
    parse_answer,
)
from beam_caption.errors import ConfigError


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_ins_are_strict_and_have_prompts(name: str) -> None:
    spec = load_spec(name)
    assert check_strict(spec.schema) is None
    assert spec.default_prompt
    fmt = spec.response_format()
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True


def test_arrow_types_follow_the_schema() -> None:
    from beam_caption.pipeline.schema import arrow_fields

    fields = {f.name: f.type for f in arrow_fields(load_spec("objects").schema)}
    assert fields["objects"] == pa.list_(pa.struct([("name", pa.string()),
                                                    ("count", pa.int64())]))
    fields = {f.name: f.type for f in arrow_fields(load_spec("moderation").schema)}
    assert fields == {"flagged": pa.bool_(), "categories": pa.list_(pa.string()),
                      "reason": pa.string()}


LOOSE = json.dumps({"type": "object", "properties": {"n": {"type": "number"}}})
STRICT = json.dumps({"type": "object", "properties": {"sku": {"type": "string"}},
                     "required": ["sku"], "additionalProperties": False})


def test_a_loose_schema_is_refused_in_strict_mode_but_allowed_in_prompt_mode() -> None:
    with pytest.raises(ConfigError, match="additionalProperties"):
        load_spec("loose.json", text=LOOSE)
    assert load_spec("loose.json", "prompt", text=LOOSE).prompt_suffix().startswith(
        "\n\nReply with only")


@pytest.mark.parametrize("content, match", [
    ("[]", "JSON object"), ('{"type": "object", "properties": {"x": {"type": "foo"}}}', "valid"),
    ("{nope", "not valid JSON"),
])
def test_bad_schema_texts(content: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_spec("s.json", "prompt", text=content)


@pytest.mark.parametrize(("value", "name"), [
    ("products.json", "products"), ("/schemas/v2/products.json", "products"),
    ("gs://bucket/schemas/shelf labels.json", "shelf_labels"), ("gs://b/v.2.json", "v_2"),
])
def test_a_schema_text_is_named_after_its_file_wherever_it_lives(value: str, name: str) -> None:
    spec = load_spec(value, text=STRICT)
    assert spec.name == name and spec.default_prompt is None
    assert spec.response_format()["json_schema"]["name"] == name


def test_the_api_package_reads_no_file(tmp_path: Path) -> None:
    # A path to an existing file, without its text, is not read here: the caller reads files.
    path = tmp_path / "tags.json"
    path.write_text(STRICT)
    with pytest.raises(ConfigError, match="neither a file nor one of the built-in"):
        load_spec(str(path))


def test_unknown_schema_name() -> None:
    with pytest.raises(ConfigError, match="built-in"):
        load_spec("colours")


def _run_config(tmp_path: Path, *flags: str) -> Any:
    from beam_caption.cli import build_parser
    from beam_caption.cli.run_config import build_run_config

    args, _ = build_parser().parse_known_args(
        ["run", "--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "out"), *flags])
    return build_run_config(args, workers=1)


def test_run_reads_a_local_schema_file_through_beam_filesystems(tmp_path: Path) -> None:
    (tmp_path / "products.json").write_text(STRICT)
    config = _run_config(tmp_path, "--schema", str(tmp_path / "products.json"))
    assert config.caption.structured.schema == json.loads(STRICT)
    assert config.caption.structured.name == "products"
    assert config.caption.request.response_format["json_schema"]["name"] == "products"


def test_a_built_in_name_wins_over_a_file_of_that_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tags").write_text(STRICT)
    config = _run_config(tmp_path, "--schema", "tags")
    assert config.caption.structured == load_spec("tags")


@pytest.mark.parametrize(("schema", "match"), [
    ("missing.json", "neither a file nor one of the built-in schemas"),
    ("nowhere://bucket/schema.json", "cannot read --schema nowhere://bucket/schema.json"),
])
def test_a_schema_that_cannot_be_read_is_one_line(tmp_path: Path, schema: str,
                                                  match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        _run_config(tmp_path, "--schema", schema if "://" in schema else str(tmp_path / schema))
    assert "\n" not in str(caught.value)


def test_a_binary_or_huge_schema_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="not UTF-8"):
        _run_config(tmp_path, "--schema", str(tmp_path / "s.json"))
    (tmp_path / "big.json").write_bytes(b" " * (1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        _run_config(tmp_path, "--schema", str(tmp_path / "big.json"))


def test_answers_are_validated() -> None:
    spec = load_spec("tags")
    assert parse_answer('{"tags": ["cat", "sofa"]}', spec) == {"tags": ["cat", "sofa"]}
    with pytest.raises(SchemaMismatch, match="tags"):
        parse_answer('{"tags": "cat"}', spec)
    with pytest.raises(SchemaMismatch, match="not JSON"):
        parse_answer("A cat on a sofa.", spec)


def test_prompt_mode_takes_json_out_of_fences_and_prose() -> None:
    spec = load_spec("ocr", "prompt")
    fenced = 'Here you go:\n```json\n{"has_text": true, "text": "EXIT"}\n```'
    assert parse_answer(fenced, spec) == {"has_text": True, "text": "EXIT"}
    assert parse_answer('Sure! {"has_text": false, "text": ""} Done.', spec)["has_text"] is False
