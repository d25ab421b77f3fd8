"""Validators for the official OpenAI schemas kept in openai_schemas.json.

Usage from any test (pytest runs from the repository root, which is on sys.path):

    from tests.contract.schemas import validator
    validator("CreateChatCompletionRequest").validate(body)   # raises on a mismatch

Names: the `roots` of openai_schemas.json (CreateChatCompletionRequest,
CreateChatCompletionResponse, CompletionUsage, OpenAIFile, Batch, CreateBatchRequest,
ListBatchesResponse, ErrorResponse) and any schema they reference.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS_FILE = Path(__file__).with_name("openai_schemas.json")


@functools.cache
def _document() -> dict[str, Any]:
    return json.loads(SCHEMAS_FILE.read_text(encoding="utf-8"))


def schema_names() -> list[str]:
    """Every schema name a validator can be built for."""
    return sorted(_document()["components"]["schemas"])


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A (cached) Draft 2020-12 validator for the component schema `name`."""
    components = _document()["components"]
    if name not in components["schemas"]:
        raise KeyError(f"no schema {name!r} in {SCHEMAS_FILE.name}; run extract_schemas.py")
    # The root document carries `components`, so the spec's own "#/components/schemas/X" refs
    # resolve unchanged.
    root = {"$ref": f"#/components/schemas/{name}", "components": components}
    return Draft202012Validator(root)


def errors(name: str, instance: Any) -> list[str]:
    """Readable validation errors of `instance` against schema `name` ([] when it is valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator(name).iter_errors(instance)]
