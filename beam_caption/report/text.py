"""The report as the plain-text tables `beam-caption report` prints (report/totals.py computes it).

Money goes through cost/pricing.py's format_usd and every table through report/table.py, as in
`beam-caption estimate`; the HTML page (report/gallery.py) shows the same realtime/batch cells.
"""

from __future__ import annotations

from typing import Any

from beam_caption.cost.pricing import format_usd
from beam_caption.report.table import text_table


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text tables: totals, realtime vs batch, errors by code, top errors."""
    parts = [f"report of {report['output']}" if report["output"] else "report",
             text_table(["total", "value"], _totals_rows(report), rule=True)]
    if report.get("journal_rows"):
        parts.append(f"{report['journal_rows']:,} of these rows are answers of an interrupted run "
                     "kept in _journal/, not yet in the Parquet files: run the same command with "
                     "--resume to write them there")
    modes = [[mode, *mode_cells(m)] for mode, m in report["by_mode"].items()]
    parts.append(text_table(["mode", "captions", "dedup", "prompt tok", "completion tok", "cost",
                             "per 1,000"], modes, rule=True))
    if report.get("skipped"):
        parts.append(text_table(["skipped (not sent)", "files"],
                                [[kind, f"{n:,}"] for kind, n in report["skipped"].items()],
                                rule=True))
    if report["errors_by_code"]:
        parts.append(text_table(
            ["error code", "images"],
            [[code, f"{n:,}"] for code, n in report["errors_by_code"].items()], rule=True))
        parts.append(text_table(
            ["count", "code", "message", "example"],
            [[f"{e['count']:,}", e["code"], _clip(e["message"], 60),
              _clip(e["example_uris"][0], 50)] for e in report["top_errors"]], rule=True))
    return "\n\n".join(parts)


def mode_cells(totals: dict[str, Any]) -> list[str]:
    """The realtime or batch totals (a `by_mode` entry) as shown: captions, deduplicated, prompt
    and completion tokens, cost and cost per 1,000 images; dashes for a mode with no caption."""
    if not totals["captions"]:
        return ["0", *["-"] * 5]
    return [f"{totals['captions']:,}", f"{totals['deduplicated']:,}",
            f"{totals['prompt_tokens']:,}", f"{totals['completion_tokens']:,}",
            format_usd(totals["cost_usd"]), format_usd(totals["cost_per_1000_images_usd"])]


def _totals_rows(report: dict[str, Any]) -> list[list[str]]:
    tokens, latency, retries = report["tokens"], report["latency_ms"], report["retries"]
    speed = report["throughput"]
    cost = format_usd(report["cost_usd"])
    if report["unpriced_captions"]:
        cost += f" ({report['unpriced_captions']:,} captions without a price)"
    return [
        ["runs", f"{len(report['runs'])} ({', '.join(r['run_id'] for r in report['runs'][-3:])})"],
        ["models", ", ".join(report["models"]) or "-"],
        ["images", f"{report['images']:,} ({report['captions']:,} captions, "
                   f"{report['errors']:,} errors, {report['deduplicated']:,} deduplicated)"],
        ["tokens billed", f"{tokens['prompt']:,} prompt + {tokens['completion']:,} completion = "
                          f"{tokens['total']:,} ({tokens['cached']:,} cached, "
                          f"{tokens['reasoning']:,} reasoning)"],
        ["cost", cost],
        ["cost per 1,000 images", format_usd(report["cost_per_1000_images_usd"])],
        ["latency p50/p95/p99", " / ".join(_num(latency[k]) for k in ("p50", "p95", "p99"))
         + " ms"],
        ["retries", f"{retries['total']:,} ({retries['images_retried']:,} images retried)"],
        ["throughput", f"{_num(speed['images_per_second'])} images/s between first and last "
                       f"row ({speed['active_seconds']:,.3f} s)"],
        *_wall(speed),
    ]


def _wall(speed: dict[str, Any]) -> list[list[str]]:
    if speed["wall_seconds"] is None:
        return []
    return [["wall-clock rate", f"{_num(speed['images_per_wall_second'])} images/s "
                                f"({speed['wall_seconds']:,.1f} s including start-up)"]]


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value:,.1f}{unit}"


def _clip(text: str, width: int) -> str:
    """One line of at most `width` characters (messages may hold newlines)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
