"""Structured answers: a JSON Schema (a file's text or a built-in) -> response_format, and
validation of the answer (no I/O: the caller reads a schema file; pipeline/schema.py turns the
schema into Parquet columns).

Two ways to ask for JSON:
- `json_schema` (default): `response_format: {"type": "json_schema", strict: true}`; the provider
  constrains the answer. OpenAI's strict mode needs every object closed (`additionalProperties:
  false`) with every property required; `check_strict` says what a schema lacks.
- `prompt`: for providers without json_schema support, the schema is appended to the prompt and
  the first JSON object in the answer (``` fences allowed) is taken. Validation is the same.
Either way an answer that does not validate becomes an error row with code `schema_mismatch`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import jsonschema

from beam_caption.errors import ConfigError

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


BUILT_IN: dict[str, tuple[dict[str, Any], str]] = {
    "tags": (_obj({"tags": {"type": "array", "items": _STR}}),
             "List 5 to 10 short lowercase tags that describe this photo."),
    "objects": (_obj({"objects": {"type": "array", "items": _obj(
        {"name": _STR, "count": {"type": "integer"}})}}),
        "List the distinct objects visible in this photo with how many of each there are."),
    "ocr": (_obj({"has_text": _BOOL, "text": _STR}),
            "Transcribe all legible text in this photo exactly; empty if there is none."),
    "moderation": (_obj({"flagged": _BOOL, "categories": {"type": "array", "items": _STR},
                         "reason": _STR}),
                   "Is this image unsafe for a general audience (nudity, violence, hate, "
                   "self-harm)? Flag it and name the categories, or explain why it is safe."),
    "alt-text": (_obj({"alt_text": _STR}),
                 "Write concise alt text for this image for a screen reader user."),
}


@dataclass(frozen=True)
class StructuredSpec:
    """A validated answer schema and how to ask for it."""

    name: str
    schema_json: str  # the schema as compact JSON (hashable, picklable)
    default_prompt: str | None
    mode: str = "json_schema"

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema as a dict."""
        return json.loads(self.schema_json)

    def response_format(self) -> dict[str, Any] | None:
        """The request's response_format (None in prompt mode)."""
        if self.mode != "json_schema":
            return None
        return {"type": "json_schema",
                "json_schema": {"name": self.name, "schema": self.schema, "strict": True}}

    def prompt_suffix(self) -> str:
        """What prompt mode appends to the prompt."""
        if self.mode != "prompt":
            return ""
        return ("\n\nReply with only a JSON object, no prose, that validates against this JSON "
                f"Schema:\n{self.schema_json}")


def load_spec(value: str, mode: str = "json_schema", text: str | None = None) -> StructuredSpec:
    """`--schema` value -> StructuredSpec: a built-in name, or a JSON Schema file's `text`.

    This package does no I/O: the caller reads the file named `value` (a local path or gs://,
    cli/run_config.py does it through Beam FileSystems) and passes its text; `value` then only
    names the schema (its file name) and the messages.
    """
    if text is None:
        if value not in BUILT_IN:
            raise ConfigError(f"--schema {value!r} is neither a file nor one of the built-in "
                              f"schemas ({', '.join(BUILT_IN)})")
        schema, prompt = BUILT_IN[value]
        name = value.replace("-", "_")
    else:
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--schema {value} is not valid JSON: {exc}") from None
        # The file's name without folders or extension, local or gs:// alike.
        stem = PurePosixPath(value.rstrip("/")).stem
        prompt, name = None, re.sub(r"[^a-zA-Z0-9_-]", "_", stem)[:64] or "answer"
    if (not isinstance(schema, dict) or schema.get("type") != "object"
            or not isinstance(schema.get("properties"), dict)):
        raise ConfigError("--schema must describe a JSON object with properties (its fields "
                          "become columns)")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"--schema is not a valid JSON Schema: {exc.message}") from None
    if mode == "json_schema":
        problem = check_strict(schema)
        if problem:
            raise ConfigError(f"--schema is not usable in strict json_schema mode: {problem} "
                              "(fix the schema, or use --schema-mode prompt)")
    column_kinds(schema)  # fails early on types a column cannot hold
    # Property order is kept: it is the column order users see.
    return StructuredSpec(name, json.dumps(schema, separators=(",", ":")),
                          prompt, mode)


def check_strict(schema: dict[str, Any], path: str = "$") -> str | None:
    """The first reason `schema` is not valid for OpenAI strict mode, or None."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return f"{path} needs \"additionalProperties\": false"
        missing = sorted(set(props) - set(schema.get("required", [])))
        if missing:
            return f"{path} must list every property in \"required\" (missing {missing})"
        for key, sub in props.items():
            problem = check_strict(sub, f"{path}.{key}")
            if problem:
                return problem
    if kind == "array" and isinstance(schema.get("items"), dict):
        return check_strict(schema["items"], f"{path}[]")
    return None


# How a JSON Schema value is stored: a scalar type name, ("list", item kind) or
# ("struct", [(property, kind), ...]); pipeline/schema.py maps these to Arrow types.
ColumnKind = str | tuple[str, Any]
_SCALAR_KINDS = ("string", "integer", "number", "boolean")


def column_kind(schema: dict[str, Any], path: str = "$") -> ColumnKind:
    """How one schema value is stored; ConfigError for what no column can hold."""
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: nullable anyway
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind in _SCALAR_KINDS:
        return kind
    if "enum" in schema and kind is None:
        return "string"
    if kind == "array":
        return ("list", column_kind(schema.get("items", {}), f"{path}[]"))
    if kind == "object":
        return ("struct", column_kinds(schema, path))
    raise ConfigError(f"--schema: cannot store {path} (type {kind!r}) as a column")


def column_kinds(schema: dict[str, Any], path: str = "$") -> list[tuple[str, ColumnKind]]:
    """(property, kind) for each property of an object schema, in order."""
    return [(key, column_kind(sub, f"{path}.{key}"))
            for key, sub in schema.get("properties", {}).items()]


_FENCE = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.DOTALL)


class SchemaMismatch(ValueError):
    """The answer is not JSON, or does not validate against the schema."""


def parse_answer(text: str, spec: StructuredSpec) -> dict[str, Any]:
    """The answer as a dict that validates against the spec's schema; raises SchemaMismatch."""
    candidate = text.strip()
    if spec.mode == "prompt":
        fenced = _FENCE.search(candidate)
        if fenced:
            candidate = fenced.group(1)
        elif "{" in candidate:
            candidate = candidate[candidate.index("{"): candidate.rindex("}") + 1]
    try:
        answer = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise SchemaMismatch(f"the answer is not JSON ({exc.msg} at {exc.pos})") from None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(spec.schema).iter_errors(answer))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the answer"
        raise SchemaMismatch(f"{where}: {error.message}"[:500])
    return answer
