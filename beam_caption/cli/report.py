"""`beam-caption report`: totals of an output directory, report.json and the HTML gallery."""

from __future__ import annotations

import argparse
import os

from beam_caption.flag_types import non_negative_int as _non_negative_int

DESCRIPTION = """Totals, errors and a photo gallery of a run's output.

Reads every captions-*.parquet and errors-*.parquet in OUTPUT (local or gs://; the shards of
several runs into one directory are reported as one), prints the totals as tables and writes them
as report.json next to the data: images, errors by code with the most frequent messages and
example URIs, billed tokens, cost and cost per 1,000 images, realtime vs batch, latency
p50/p95/p99, retries and throughput. Deduplicated rows count as images, not as billed tokens.

With --html, also writes one self-contained page (no network needed to open it, nothing loaded
from elsewhere) with the totals, small plots and a gallery of thumbnails with their captions,
tokens and cost, a search box that filters by caption text, and the errors listed apart."""
EPILOG = """examples:
  beam-caption report out/demo --html out/demo/report.html
  beam-caption report gs://captions/run1 --html report.html --sample 300
  beam-caption report out/run1 --json /tmp/run1-report.json

Add ?q=WORDS to the page's address (file:///.../report.html?q=dark) to open it with a search.
exit codes: 0 written; 2 no Parquet files in OUTPUT, or a path that cannot be written."""


def _thumb_side(text: str) -> int:
    value = int(text)
    if not 32 <= value <= 512:
        raise argparse.ArgumentTypeError("must be between 32 and 512 pixels")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report flags."""
    parser.add_argument("output", metavar="OUTPUT",
                        help="the --output directory of a run (local or gs://)")
    parser.add_argument("--json", dest="json_path", metavar="PATH", default=None,
                        help="where to write report.json (local or gs://; default "
                             "OUTPUT/report.json)")
    parser.add_argument("--html", metavar="PATH", default=None,
                        help="also write the HTML page with the gallery to PATH (local or gs://), "
                             "e.g. --html report.html")
    parser.add_argument("--sample", type=_non_negative_int, default=1000, metavar="N",
                        help="captions shown in the gallery, the same ones every time; 0 shows "
                             "all (default %(default)s; ~5 MB of page per 1,000)")
    parser.add_argument("--thumb-size", type=_thumb_side, default=160, metavar="PX",
                        help="longest side of the gallery thumbnails (default %(default)s)")
    parser.add_argument("--top-errors", type=_non_negative_int, default=10, metavar="N",
                        help="most frequent error messages listed (default %(default)s)")


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Print the totals, write report.json and, with --html, the gallery page."""
    # Imported here: pyarrow and Beam's filesystems are slow to import; `--help` needs neither.
    from beam_caption.auth.gcloud import settle_gcs_credentials
    from beam_caption.report import totals as rp
    from beam_caption.report.text import format_report

    settle_gcs_credentials([args.output, args.html or ""])
    captions, errors, journal_rows = rp.load_tables(args.output)
    report = rp.build_report(captions, errors, output=args.output,
                             summary=rp.load_summary(args.output), top_errors=args.top_errors,
                             journal_rows=journal_rows)
    print(format_report(report))
    json_path = args.json_path or rp.default_json_path(args.output)
    rp.write_report_json(report, json_path)
    print(f"\nreport.json: {_shown_path(json_path)}")
    if args.html:
        from beam_caption.report.gallery import build_gallery

        page = build_gallery(report, captions, errors, sample=args.sample,
                             thumb_side=args.thumb_size)
        rp.write_text(args.html, page, "text/html")
        shown = min(args.sample or report["captions"], report["captions"])
        size = len(page.encode())
        size_text = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
        print(f"gallery:     {_shown_path(args.html, url=True)} ({size_text}, "
              f"{shown:,} of {report['captions']:,} captions)")
    return 0


def _shown_path(path: str, url: bool = False) -> str:
    """A local path made absolute (a file:// URL for a page, to click in a terminal)."""
    if "://" in path:
        return path
    absolute = os.path.abspath(path)
    return f"file://{absolute}" if url else absolute
