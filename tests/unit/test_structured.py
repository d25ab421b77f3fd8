"""Structured answers: schema loading, strict checks, Arrow types, answer parsing."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_a_loose_schema_is_refused_in_strict_mode_but_allowed_in_prompt_mode(tmp_path) -> None:
    path = tmp_path / "loose.json"
    path.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "number"}}}))
    with pytest.raises(ConfigError, match="additionalProperties"):
        load_spec(str(path))
    assert load_spec(str(path), "prompt").prompt_suffix().startswith("\n\nReply with only")


@pytest.mark.parametrize("content, match", [
    ("[]", "JSON object"), ('{"type": "object", "properties": {"x": {"type": "foo"}}}', "valid"),
    ("{nope", "not valid JSON"),
])
def test_bad_schema_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_spec(str(path), "prompt")


def test_unknown_schema_name() -> None:
    with pytest.raises(ConfigError, match="built-in"):
        load_spec("colours")


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
