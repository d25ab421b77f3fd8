"""Structured outputs: check `response_format` as the API does and build an answer that fits it.

json_schema answers are JSON objects valid against the caller's schema, filled from the image
facts (a property called "caption" gets the caption, "colors" the colour names, "width" the
width...), so structured-output pipelines get typed, recognisable columns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from beam_caption.simulator.apierror import bad_request, invalid_value, missing
from beam_caption.simulator.captions import brightness_word, caption, keywords, orientation_word
from beam_caption.simulator.image_parts import ImageFacts

_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_DEPTH = 8


@dataclass(frozen=True)
class ResponseFormat:
    """The checked response_format: kind is text, json_object or json_schema."""

    kind: str = "text"
    schema: dict[str, Any] = field(default_factory=dict)
    strict: bool = False


def check_response_format(value: Any, prompt_text: str) -> ResponseFormat:
    """Validate `response_format` (None means text); 400 for what the real API refuses."""
    if value is None:
        return ResponseFormat()
    if not isinstance(value, dict) or "type" not in value:
        raise missing("response_format.type")
    kind = value["type"]
    if kind == "text":
        return ResponseFormat()
    if kind == "json_object":
        # The API insists the prompt mentions JSON, or the model may emit whitespace forever.
        if "json" not in prompt_text.lower():
            raise bad_request("'messages' must contain the word 'json' in some form, to use "
                              "'response_format' of type 'json_object'.", "messages")
        return ResponseFormat(kind="json_object")
    if kind != "json_schema":
        raise invalid_value("response_format.type", kind, ("text", "json_object", "json_schema"))
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise missing("response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str):
        raise missing("response_format.json_schema.name")
    if not _NAME_RE.match(name):
        raise bad_request(f"Invalid 'response_format.json_schema.name': string does not match "
                          f"pattern. Expected a string that matches the pattern "
                          f"'{_NAME_RE.pattern}'.", "response_format.json_schema.name",
                          "invalid_value")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise bad_request("Invalid type for 'response_format.json_schema.schema': expected an "
                          "object.", "response_format.json_schema.schema", "invalid_type")
    strict = bool(spec.get("strict"))
    if strict:
        _check_strict(schema, name)
    return ResponseFormat(kind="json_schema", schema=schema, strict=strict)


def _check_strict(schema: dict[str, Any], name: str) -> None:
    """Strict mode rules: root is an object; every object closes and requires all properties."""
    if schema.get("type") != "object":
        raise _schema_error(name, "()", "schema must be a JSON Schema of 'type: \"object\"', "
                            f"got 'type: \"{schema.get('type')}\"'.")

    def walk(node: Any, context: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, context)
            return
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" or "properties" in node:
            if node.get("additionalProperties") is not False:
                raise _schema_error(name, context, "'additionalProperties' is required to be "
                                    "supplied and to be false.")
            props = list(node.get("properties", {}))
            absent = [p for p in props if p not in node.get("required", [])]
            if absent:
                raise _schema_error(name, context, "'required' is required to be supplied and "
                                    f"to be an array including every key in properties. "
                                    f"Missing '{absent[0]}'.")
            for key, sub in node.get("properties", {}).items():
                walk(sub, f"{context[:-1]}'properties', '{key}')")
        for key in ("items", "anyOf", "allOf", "$defs", "definitions", "prefixItems"):
            if key in node:
                sub = node[key]
                walk(list(sub.values()) if isinstance(sub, dict) and key in ("$defs",
                     "definitions") else sub, f"{context[:-1]}'{key}')")

    walk(schema, "()")


def _schema_error(name: str, context: str, detail: str) -> Exception:
    return bad_request(f"Invalid schema for response_format '{name}': In context={context}, "
                       f"{detail}", "response_format", "invalid_json_schema")


# What a prompt that asks for JSON without response_format says (api/structured.py's prompt
# mode, for providers without structured outputs); a model follows it, so the simulator does.
_PROMPTED = "validates against this JSON Schema:"


def prompted_format(fmt: ResponseFormat, texts: list[str]) -> ResponseFormat:
    """`fmt`, or for a text request whose prompt asks for JSON valid against a schema it
    quotes, that schema as json_schema (as an instruction-following model would answer)."""
    if fmt.kind != "text":
        return fmt
    for text in texts:
        cut = text.find(_PROMPTED)
        if cut < 0:
            continue
        try:
            schema, _ = json.JSONDecoder().raw_decode(text[cut + len(_PROMPTED):].strip())
        except ValueError:
            return fmt
        return ResponseFormat("json_schema", schema) if isinstance(schema, dict) else fmt
    return fmt


def answer_text(fmt: ResponseFormat, images: list[ImageFacts]) -> str:
    """The answer's content for `fmt`: the caption, or compact JSON built from the facts."""
    if fmt.kind == "text":
        return caption(images)
    if fmt.kind == "json_object":
        return json.dumps({"caption": caption(images), "tags": keywords(images)})
    generator = _Generator(fmt.schema, images)
    return json.dumps(generator.value(fmt.schema, "", 0), ensure_ascii=False)


class _Generator:
    """Builds one instance of a JSON schema, choosing values from the image facts by name."""

    def __init__(self, root: dict[str, Any], images: list[ImageFacts]) -> None:
        self.root = root
        self.images = images
        self.caption = caption(images)
        self.tags = keywords(images)

    def value(self, schema: Any, name: str, depth: int) -> Any:
        """An instance of `schema` for a property called `name`, at nesting `depth`."""
        if not isinstance(schema, dict):
            return self.caption  # `true` or an empty schema: anything goes
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), name, depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self._pick(schema[key], depth), name, depth + 1)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self._resolve(part["$ref"]) if "$ref" in part else part
                merged.update({k: v for k, v in part.items() if k != "properties"})
                merged.setdefault("properties", {}).update(part.get("properties", {}))
            return self.value(merged, name, depth + 1)
        kind = schema.get("type", "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        return getattr(self, f"_{kind}", self._string)(schema, name, depth)

    def _pick(self, options: list[Any], depth: int) -> Any:
        nulls = [o for o in options if isinstance(o, dict) and o.get("type") == "null"]
        others = [o for o in options if o not in nulls]
        if depth >= _MAX_DEPTH and nulls:
            return nulls[0]  # cut recursive schemas short where they allow it
        return (others or nulls)[0]

    def _resolve(self, ref: str) -> Any:
        if ref == "#":
            return self.root
        node: Any = self.root
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _object(self, schema: dict[str, Any], name: str, depth: int) -> dict[str, Any]:
        props = schema.get("properties", {})
        return {key: self.value(sub, key, depth + 1) for key, sub in props.items()}

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        prefix = [self.value(s, name, depth + 1) for s in schema.get("prefixItems", [])]
        items = schema.get("items", {})
        low = max(int(schema.get("minItems", 1)) - len(prefix), 0)
        high = int(schema.get("maxItems", len(prefix) + max(low, len(self.tags))))
        count = max(low, min(high - len(prefix), len(self.tags)))
        if items is False:
            return prefix
        out = [self.value(items, name, depth + 1) for _ in range(count)]
        if out and all(isinstance(v, str) for v in out) and not _fixed(items):
            out = [self.tags[i % len(self.tags)] for i in range(count)]
        return prefix + out

    def _string(self, schema: dict[str, Any], name: str, depth: int) -> str:
        key = name.lower()
        first = self.images[0] if self.images else None
        if "colo" in key:
            text = self.tags[0]
        elif first and "orientation" in key:
            text = orientation_word(first.width, first.height)
        elif first and ("bright" in key or "light" in key):
            text = brightness_word(first.brightness)
        elif key in ("title", "label", "name", "tag", "keyword"):
            text = self.tags[0]
        else:
            text = self.caption
        fmt = schema.get("format")
        if fmt == "date-time":
            text = "2024-01-01T00:00:00Z"
        elif fmt == "date":
            text = "2024-01-01"
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = text.ljust(low, ".")
        return text[: int(high)] if high is not None else text

    def _integer(self, schema: dict[str, Any], name: str, depth: int) -> int:
        return int(self._number(schema, name, depth, integer=True))

    def _number(self, schema: dict[str, Any], name: str, depth: int,
                integer: bool = False) -> float:
        key, first = name.lower(), (self.images[0] if self.images else None)
        value: float = 0
        if first and "width" in key:
            value = first.width
        elif first and "height" in key:
            value = first.height
        elif "count" in key or "number" in key:
            value = len(self.images)
        elif first and ("bright" in key or "score" in key or "confidence" in key):
            value = first.brightness
        step = 1 if integer else 1e-6
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema:
            value = max(value, schema["exclusiveMinimum"] + step)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        if "exclusiveMaximum" in schema:
            value = min(value, schema["exclusiveMaximum"] - step)
        return round(value) if integer else value

    def _boolean(self, schema: dict[str, Any], name: str, depth: int) -> bool:
        first = self.images[0] if self.images else None
        return bool(first and first.brightness >= 0.5 and "bright" in name.lower())

    def _null(self, schema: dict[str, Any], name: str, depth: int) -> None:
        return None


def _fixed(items: Any) -> bool:
    """True when array items are constrained beyond 'a string' (enum, const, pattern...)."""
    return isinstance(items, dict) and any(k in items for k in ("enum", "const", "pattern",
                                                                  "$ref", "anyOf", "oneOf",
                                                                  "format", "maxLength"))
