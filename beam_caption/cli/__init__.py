"""The `beam-caption` command: parse, build the config, run, map known errors to exit codes.

Each subcommand lives in its own module with `add_arguments(parser)` and `main(args, extra) -> int`;
this file only dispatches, and imports only the module of the subcommand being run (`beam-caption
--help` imports none; `beam-caption simulate` never imports Beam). Exit codes: 0 success, 1 the
job ran but failed or stopped early, 2 a bad flag, file or configuration (one line on stderr,
never a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from typing import NoReturn

from beam_caption import __version__
from beam_caption.errors import ConfigError, RunAborted
from beam_caption.quick_exit import exit_now

# name -> (module, one-line help). Modules are imported only when their subcommand runs, so
# `beam-caption --help` stays fast and `simulate` does not import Beam.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("beam_caption.cli.run", "caption images into Parquet (the main job)"),
    "estimate": ("beam_caption.cli.estimate", "count tokens and dollars before spending anything"),
    "batch": ("beam_caption.cli.batch",
              "follow a --mode batch run: submit, status, collect or cancel its batches"),
    "simulate": ("beam_caption.cli.simulate", "start the local OpenAI-compatible simulator"),
    "report": ("beam_caption.cli.report", "totals, report.json and an HTML gallery of an output"),
    "template-metadata": ("beam_caption.cli.template",
                          "write the Dataflow Flex Template's metadata.json from the run options"),
}

EPILOG = """examples:
  beam-caption run --simulate --input 'samples/*.jpg' --output out/demo
  beam-caption run --input 'gs://archive/**/*.jpg' --output gs://captions/run1 --model gpt-5.4-nano
  beam-caption simulate --port 8080 --latency-ms 200 --rpm 600
Run `beam-caption COMMAND --help` for a command's options."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"beam-caption: error: {message}\n")


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The top-level parser: every subcommand with its arguments ("*"), or only `command`'s
    module imported and given its arguments and the others listed by name (None: none)."""
    parser = _ArgumentParser(prog="beam-caption", description=__doc__.splitlines()[0],
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"beam-caption {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("BEAM_CAPTION_LOG", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if command not in (name, "*"):
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, allow_abbrev=False,
                            description=getattr(module, "DESCRIPTION", help_text),
                            epilog=getattr(module, "EPILOG", None),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sp)
        # Also accepted after the subcommand, where users tend to put it.
        sp.add_argument("--log-level", default=argparse.SUPPRESS, help="logging verbosity",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        sp.set_defaults(_module=module)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is one), if any."""
    return next((word for word in argv if word in SUBCOMMANDS), None)


def console() -> NoReturn:
    """The `beam-caption` console script: main(), then a quick exit (quick_exit.py)."""
    exit_now(main())


def main(argv: list[str] | None = None) -> int:
    """The `beam-caption` command: parse `argv` (default sys.argv), run the subcommand, and
    return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # Beam compiles a path's escaped glob characters ('[[]', normalize_pattern's) into a
    # regex that Python warns may one day mean a nested set; it matches what it should today.
    warnings.filterwarnings("ignore", "Possible nested set", FutureWarning)
    command = _command_in(argv)
    if command == "run":
        # Before the command's imports bring pyarrow in (runner/allocators.py says why).
        from beam_caption.runner.allocators import settle_allocators

        settle_allocators()
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        # Beam's INFO lines (type-hint conversions, state caches, shard renames) drown ours.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        # Local worker processes relay their logs through Beam's job service, as raw protos.
        from beam_caption.runner.worker_logs import install

        install()
    if args.command is None:
        parser.print_help()
        return 2
    accepts_extra = getattr(args._module, "ACCEPTS_BEAM_OPTIONS", False)
    if extra and not accepts_extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._module.main(args, extra) or 0)
    except ConfigError as exc:
        print(f"beam-caption: error: {exc}", file=sys.stderr)
        return 2
    except RunAborted as exc:
        print(f"beam-caption: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("beam-caption: interrupted", file=sys.stderr)
        return 130
