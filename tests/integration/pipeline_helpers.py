"""Helpers for tests that run the real pipeline on the FnApiRunner against the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from beam_caption.cli import main as cli_main

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def run_cli(*args: str) -> int:
    """`beam-caption ARGS` in this process; returns the exit code."""
    try:
        return cli_main(list(args))
    except SystemExit as exc:  # argparse errors exit
        return int(exc.code or 0)


def read_rows(output: Path, table: str) -> list[dict[str, Any]]:
    """Every row of captions-*.parquet or errors-*.parquet in `output`."""
    files = sorted(output.glob(f"{table}-*.parquet"))
    if not files:
        return []
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()


def read_summary(output: Path) -> dict[str, Any]:
    """run-summary.json as a dict."""
    return json.loads((output / "run-summary.json").read_text())


def logged_requests(log_path: Path) -> list[dict[str, Any]]:
    """The chat-completion request bodies the simulator logged."""
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [r["request"] for r in records if r.get("path", "").endswith("/chat/completions")]
