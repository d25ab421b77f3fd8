"""The Dataflow Flex Template: metadata.json generated from RUN_OPTIONS, and the launcher's argv.

templates/metadata.json is never edited by hand: `beam-caption template-metadata --output
templates/metadata.json` writes it from the same option table as `run --help`, and a test fails
when the file is out of date. Parameter names use underscores (max_side), the spelling of Beam's
own options and of every Google template; the launcher's entry point (templates/launch.py, which
calls cli/template.py's `launch`) turns the `--max_side=512` the Flex Template launcher passes
back into our `--max-side=512`, and `--overwrite=true` into the bare flag argparse expects.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from beam_caption.api.structured import BUILT_IN
from beam_caption.auth.secrets import SECRET_NAME_PATTERN
from beam_caption.errors import ConfigError
from beam_caption.options import RUN_OPTIONS, Option

_LOG = logging.getLogger(__name__)

TEMPLATE_NAME = "beam-caption"
TEMPLATE_DESCRIPTION = (
    "Caption images in Cloud Storage with a vision-language model over an OpenAI-compatible "
    "chat-completions API; writes captions-*.parquet (with tokens and cost), errors-*.parquet "
    "and run-summary.json to the output folder. The API key comes from Secret Manager "
    "(api_key_secret), never from a parameter value.")
METADATA_FILE = "templates/metadata.json"
# Set in templates/Dockerfile's launcher stage to the digest-pinned worker image it was built
# from (the launcher's own files): the launcher passes it as --sdk_container_image.
IMAGE_ENV = "BEAM_CAPTION_IMAGE"

# `run` flags a template does not offer, and why (a test checks each still exists).
NOT_TEMPLATE_PARAMETERS: dict[str, str] = {
    "--simulate": "the simulator would run in the launcher VM, out of the workers' reach",
    "--api-key-env": "Dataflow workers do not see the launcher's environment; use api_key_secret",
    "--api-key-file": "a file in the launcher container is not on the workers; use api_key_secret",
    "--prices": "a local file; the launcher container has only the built-in price table",
    "--wait": "a template launcher starts the job and returns; `beam-caption batch collect` waits",
    "--poll-interval": "only used while a launcher waits for batches, which a template never does",
    "--interrupt-grace": "Ctrl-C reaches local runs only; a Dataflow job is drained or cancelled",
}

_ANY_TEXT = r"[^\n\r]+"
# Flags whose values are locations: a console picker type and the value's shape. Only schemes the
# image can read: it has Beam's GCS filesystem and Google credentials, but no S3 filesystem (no
# boto3) and no AWS credentials, and a local path would name a file in the launcher container,
# which the workers do not have.
_LOCATIONS: dict[str, tuple[str, str]] = {
    "--input": ("TEXT", rf"^(gs|https?)://{_ANY_TEXT}$"),
    # TEXT, not a file picker: a manifest may be a glob (an inventory report's shards).
    "--manifest": ("TEXT", rf"^gs://{_ANY_TEXT}$"),
    "--output": ("GCS_WRITE_FOLDER", rf"^gs://{_ANY_TEXT}$"),
    "--incremental": ("GCS_READ_FOLDER", rf"^gs://{_ANY_TEXT}$"),
    "--base-url": ("TEXT", rf"^https?://{_ANY_TEXT}$"),
    "--api-key-secret": ("TEXT", SECRET_NAME_PATTERN),
    # The built-in names are lowercase words and hyphens: nothing to escape for any regex engine.
    "--schema": ("TEXT", rf"^(gs://{_ANY_TEXT}|{'|'.join(BUILT_IN)})$"),
}
# The run options' help names what a local run reads (local paths, s3://); the template's form
# says what the image reads.
_TEMPLATE_HELP: dict[str, str] = {
    "--input": "image URIs: a gs:// glob (** recurses) or an https:// URL (no s3:// or local "
               "paths: the image has no S3 filesystem or AWS credentials, and the workers do not "
               "see the launcher's files)",
    "--manifest": "a gs:// file or glob listing images: .txt (one URI per line), "
                  ".csv/.jsonl/.parquet with a 'uri' column and optional 'id' and 'prompt' "
                  "columns, or a Cloud Storage inventory report (.csv/.parquet with 'bucket' and "
                  "'name'); its URIs must be gs:// or https://",
    "--schema": "structured answers: a JSON Schema file on gs:// (read by the launcher), or a "
                f"built-in: {', '.join(BUILT_IN)}; its top-level properties become typed Parquet "
                "columns and answers that do not validate become schema_mismatch error rows",
}
# A container image named by digest: what the workers run cannot change after the launch.
_PINNED_IMAGE = re.compile(r"[^\s@]+@sha256:[0-9a-f]{64}")
_EXAMPLES: dict[str, str] = {
    "--input": "gs://my-bucket/photos/**/*.jpg",
    "--output": "gs://my-bucket/captions/run1",
    "--api-key-secret": "projects/my-project/secrets/openai-api-key/versions/latest",
}
_ACRONYMS = {"url": "URL", "api": "API", "rpm": "RPM", "tpm": "TPM", "mb": "MB", "jpeg": "JPEG",
             "usd": "USD", "id": "ID", "urls": "URLs"}
_FLAG = re.compile(r"--([a-z][a-z-]*[a-z])")
_INTEGER = r"^[0-9]+$"
_DECIMAL = r"^[0-9]+(\.[0-9]+)?$"
_BOOLEAN = r"^(true|false)$"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def template_options() -> list[Option]:
    """The run options a template offers: all but NOT_TEMPLATE_PARAMETERS."""
    return [opt for opt in RUN_OPTIONS if opt.flag not in NOT_TEMPLATE_PARAMETERS]


def parameter_name(opt: Option) -> str:
    """The template parameter's name: the flag in underscore spelling (max_side)."""
    return opt.dest


def _is_boolean(opt: Option) -> bool:
    return opt.action in ("store_true", "bool")


def _is_integer_type(opt: Option) -> bool:
    # The option table's converters are small private functions (_positive_int, _quality, ...);
    # asking the converter itself beats keeping a second list of which ones are integers.
    try:
        opt.type("1.5")
    except (ValueError, argparse.ArgumentTypeError):
        return True
    return False


def _kind(opt: Option) -> tuple[str, str | None]:
    """(paramType, regex) for one option."""
    if _is_boolean(opt):
        return "BOOLEAN", _BOOLEAN
    if opt.choices:
        return "ENUM", "^(" + "|".join(opt.choices) + ")$"
    if opt.flag in _LOCATIONS:
        return _LOCATIONS[opt.flag]
    if opt.type is str:
        return "TEXT", None
    return "NUMBER", _INTEGER if _is_integer_type(opt) else _DECIMAL


def _label(opt: Option) -> str:
    words = [_ACRONYMS.get(word, word) for word in opt.flag.lstrip("-").split("-")]
    words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words)


def _default_text(opt: Option) -> str | None:
    """The default as the console would show it, or None when there is none to show."""
    if opt.default is None or opt.action == "append":
        return None
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    return str(opt.default)


def _help_text(opt: Option) -> str:
    # Other flags named in the help are spelled as the template parameters they become.
    text = _FLAG.sub(lambda m: m.group(1).replace("-", "_"), _TEMPLATE_HELP.get(opt.flag, opt.help))
    sentences = [text[:1].upper() + text[1:]]
    if opt.action == "append":
        sentences.append("A template takes one value")
    default = _default_text(opt)
    if default not in (None, "false"):
        sentences.append(f"Default: {default}")
    if opt.flag in _EXAMPLES:
        sentences.append(f"Example: {_EXAMPLES[opt.flag]}")
    return ". ".join(sentences)


def parameter_metadata(opt: Option) -> dict[str, Any]:
    """One option as a Flex Template ParameterMetadata (Dataflow API v1b3 field names)."""
    param_type, regex = _kind(opt)
    entry: dict[str, Any] = {
        "name": parameter_name(opt),
        "label": _label(opt),
        "helpText": _help_text(opt),
        "isOptional": not opt.required,
        "paramType": param_type,
        "groupName": opt.group[:1].upper() + opt.group[1:],
    }
    if regex:
        entry["regexes"] = [regex]
    if param_type == "ENUM":
        entry["enumOptions"] = [{"value": choice} for choice in opt.choices or ()]
    default = _default_text(opt)
    if default is not None:
        entry["defaultValue"] = default
    return entry


def build_metadata() -> dict[str, Any]:
    """The whole metadata.json document."""
    return {"name": TEMPLATE_NAME, "description": TEMPLATE_DESCRIPTION, "streaming": False,
            "parameters": [parameter_metadata(opt) for opt in template_options()]}


def render_metadata() -> str:
    """metadata.json's exact text (stable key order, two-space indent, final newline)."""
    return json.dumps(build_metadata(), indent=2, ensure_ascii=False) + "\n"


# -- the launcher ------------------------------------------------------------------------------

def launcher_argv(argv: Sequence[str], image: str | None = None) -> list[str]:
    """The `run` arguments for what the Flex Template launcher passed.

    Template parameters arrive as --name=value in underscore spelling; booleans as true/false.
    Anything else (Beam and Dataflow options such as --project, --temp_location) passes through.
    The job always runs on Dataflow; with `image` (the worker image this launcher was built from,
    which must be pinned by digest) the workers run it, where beam-caption is already installed,
    so the staged setup package is dropped and workers start without pip installs.
    """
    by_name = {parameter_name(opt): opt for opt in template_options()}
    args: list[str] = []
    for arg in argv:
        name, has_value, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        opt = by_name.get(name.replace("-", "_"))
        if opt is None:
            args.append(arg)
        elif _is_boolean(opt):
            args.extend(_boolean_flag(opt, value if has_value else "true"))
        else:
            args.append(f"{opt.flag}={value}" if has_value else opt.flag)
    return _dataflow_defaults(args, image)


def _boolean_flag(opt: Option, value: str) -> list[str]:
    text = value.strip().lower()
    if text not in _TRUE + _FALSE:
        raise ConfigError(f"{parameter_name(opt)} must be true or false, got {value!r}")
    if text in _TRUE:
        return [opt.flag]
    # BooleanOptionalAction flags have a --no- form; store_true flags are simply left out.
    return [f"--no-{opt.flag[2:]}"] if opt.action == "bool" else []


def is_pinned_image(ref: str) -> bool:
    """True for an image named by digest (REPOSITORY@sha256:<64 hex>), which can never move."""
    return bool(_PINNED_IMAGE.fullmatch(ref))


def _dataflow_defaults(args: list[str], image: str | None) -> list[str]:
    flags = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
    if "--runner" not in flags:
        args.append("--runner=DataflowRunner")  # never run the job inside the launcher VM
    if not image:
        return args
    if not is_pinned_image(image):
        # A tag can be pushed over between launches: the workers would run other code than the
        # launcher that built the job.
        raise ConfigError(f"{IMAGE_ENV}={image} is not pinned by digest (IMAGE@sha256:...); "
                          "build the image with `make template-build`")
    if "--sdk_container_image" not in flags:
        args.append(f"--sdk_container_image={image}")
    if f"--sdk_container_image={image}" in args and "--setup_file" in flags:
        _LOG.info("workers run %s, which has beam-caption installed: not staging setup.py", image)
        args = [arg for arg in args if arg.split("=", 1)[0] != "--setup_file"]
    return args
