"""`beam-caption template-metadata`, and the Flex Template's entry point (`launch`).

The metadata and the argument mapping are dataflow/template.py's; this module is the command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from beam_caption.dataflow.template import IMAGE_ENV, METADATA_FILE, launcher_argv, render_metadata
from beam_caption.errors import ConfigError


def launch(argv: Sequence[str] | None = None) -> int:
    """The Flex Template entry point: `beam-caption run` with the translated arguments."""
    from beam_caption.cli import main

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = launcher_argv(argv, os.environ.get(IMAGE_ENV) or None)
    except ConfigError as exc:
        print(f"beam-caption: error: {exc}", file=sys.stderr)
        return 2
    return main(["run", *args])


DESCRIPTION = """Write the Flex Template's metadata.json, generated from the run options.

Every `run` option except a few that cannot work in a template (local files, the local simulator,
keys from the launcher's environment) becomes a template parameter with its label, help text,
type, default and a validation regex."""
EPILOG = f"""examples:
  beam-caption template-metadata --output {METADATA_FILE}
  beam-caption template-metadata --check {METADATA_FILE}    # exit 1 when out of date"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--output FILE (default: standard output) and --check FILE."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--output", metavar="FILE", default="-",
                        help="write the metadata here (default: standard output)")
    target.add_argument("--check", metavar="FILE",
                        help="compare FILE with the generated metadata; exit 1 if it differs")


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Write or check metadata.json; returns the exit code."""
    text = render_metadata()
    if args.check:
        path = Path(args.check)
        if not path.is_file():
            raise ConfigError(f"--check {args.check}: no such file")
        if path.read_text(encoding="utf-8") != text:
            print(f"beam-caption: {args.check} is out of date; regenerate it with "
                  f"`beam-caption template-metadata --output {args.check}`", file=sys.stderr)
            return 1
        return 0
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    Path(args.output).write_text(text, encoding="utf-8")
    return 0
