"""`beam-caption estimate`: tokens and dollars before spending anything (no model is called)."""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_caption import job as pl
from beam_caption.auth.gcloud import settle_gcs_credentials
from beam_caption.cli.run_config import build_run_config, settle_model
from beam_caption.config import RunConfig
from beam_caption.cost.pricing import ModelPrice, format_usd, load_prices
from beam_caption.errors import ConfigError
from beam_caption.estimate.bill import (
    COMPARE_SIDES,
    DEFAULT_COMPARE_COUNT,
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    BillSettings,
    bill_document,
)
from beam_caption.estimate.measure import TokenSpec, token_spec
from beam_caption.estimate.pipeline import EstimateTokens
from beam_caption.flag_types import positive_int as _positive_int
from beam_caption.inputs.library import LOCAL_BUCKETS, LibrarySettings, SortLibrary
from beam_caption.inputs.sources import ExpandInputs, check_inputs
from beam_caption.options import add_caption_arguments, refuse_unknown
from beam_caption.pipeline.outputs import read_table
from beam_caption.report.table import text_table

ACCEPTS_BEAM_OPTIONS = True
REPORT_NAME = "estimate.json"
_TALLY_NAME = "estimate-tally.json"
DESCRIPTION = """Count the tokens and dollars a run would cost, before spending anything.

Takes the same flags as `run` (so you can swap the word `run` for `estimate`), reads only each
image's header to learn its size, and computes the prompt tokens by the same rules the run and
the simulator bill by. It calls no model endpoint and needs no API key. It prints the images
found, the unreadable files, the input and output tokens, the cost in realtime and Batch API
mode, and side-by-side lines for alternative models and for --max-side 0 / 512 / 768. It runs as
a Beam pipeline (locally on one in-memory worker by default; any Beam flag passes through, so a
bucket can be estimated on Dataflow). Output tokens are a guess: the expected answer length
(--expected-output-tokens) and the worst case, every answer at --max-output-tokens."""
EPILOG = f"""examples:
  beam-caption estimate --input 'samples/*.jpg'
  beam-caption estimate --input '/photos/**/*.jpg' --model gpt-4.1-nano --max-side 768 --sample 500
  beam-caption estimate --manifest images.csv --compare-models gpt-5.4-mini,gpt-4o-mini --json

notes:
  --expected-output-tokens defaults to {DEFAULT_EXPECTED_OUTPUT_TOKENS}, a one-sentence caption.
  --sample N measures a deterministic sample of N files and scales the totals up.
  Every input is counted: files listed twice count twice (a run with --dedupe pays for identical
  images once per worker), and --resume / --incremental skips are not subtracted.
  A file whose header is whole but whose image data is broken is only found by the run.

exit codes: 0 done; 2 a bad flag or input."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run flags (none required here but an input) plus the estimate's own."""
    add_caption_arguments(parser, enforce_required=False)
    for action in parser._actions:  # argparse has no public way to reword one flag's help
        if "--output" in action.option_strings:
            action.help = (f"optional: also write {REPORT_NAME} here (local or gs://); "
                           "required with a remote --runner")
    group = parser.add_argument_group("estimate")
    group.add_argument("--sample", type=_positive_int, metavar="N",
                       help="measure a deterministic sample of N files and scale up")
    group.add_argument("--expected-output-tokens", type=_positive_int, metavar="N",
                       default=DEFAULT_EXPECTED_OUTPUT_TOKENS,
                       help="expected answer length in tokens (default: "
                            f"{DEFAULT_EXPECTED_OUTPUT_TOKENS}, a one-sentence caption)")
    group.add_argument("--output-tokens-from", metavar="DIR",
                       help="take the expected answer length from an earlier run's captions "
                            "(e.g. a trial run on a sample with the same prompt): the most "
                            "accurate estimate")
    group.add_argument("--compare-models", metavar="LIST",
                       help="comma-separated models to compare with, or 'none' (default: the "
                            f"{DEFAULT_COMPARE_COUNT} nearest in price, cheaper and dearer)")
    group.add_argument("--json", action="store_true", help="print the estimate as JSON")


def measured_output_tokens(output: str) -> int:
    """Mean completion tokens per billed answer in an earlier run's captions."""
    table = read_table(output.rstrip("/"), "captions")
    if table is None or table.num_rows == 0:
        raise ConfigError(f"--output-tokens-from {output} holds no captions-*.parquet rows")
    rows = [r for r in table.select(["completion_tokens", "deduplicated"]).to_pylist()
            if not r["deduplicated"] and r["completion_tokens"] is not None]
    if not rows:
        raise ConfigError(f"--output-tokens-from {output} has no billed answers")
    return max(1, round(sum(r["completion_tokens"] for r in rows) / len(rows)))


def main(args: argparse.Namespace, beam_flags: list[str]) -> int:
    """Run the estimate pipeline and print the bill; returns the exit code."""
    refuse_unknown(beam_flags, "estimate")
    options = estimate_pipeline_options(beam_flags)
    local = pl.is_local(options)
    settle_gcs_credentials([*(args.input or ()), args.manifest or "", args.output or ""])
    if not local and not args.output:
        raise ConfigError("with a remote --runner, give --output DIR (e.g. gs://...) to receive "
                          "the estimate")
    prices = load_prices(args.prices)
    expected_output = args.expected_output_tokens
    if args.output_tokens_from:
        expected_output = measured_output_tokens(args.output_tokens_from)
    settle_model(args)
    config = run_config(args)
    bill = BillSettings(model=args.model, max_side=args.max_side,
                        expected_output_tokens=expected_output,
                        max_output_tokens=args.max_output_tokens,
                        compare_models=_compare_models(args.compare_models, prices),
                        price=config.caption.price)
    check_inputs(list(config.inputs), config.manifest)
    spec = token_spec(prices, config.caption, fetch=config.fetch,
                      max_sides=(*COMPARE_SIDES, args.max_side),
                      max_pixels=config.prepare.max_pixels, near=config.near is not None,
                      near_seconds=config.near.seconds if config.near else 10.0)
    with _work_dir(args.output if not local else None) as work:
        refs = ExpandInputs(list(config.inputs), config.manifest,
                            prompt_column=config.prompt_column,
                            reshuffle=False)  # SortLibrary's grouping spreads them
        tally = run_pipeline(options, refs, spec, args.sample,
                             FileSystems.join(work, _TALLY_NAME), library=config.library)
    document = bill_document(tally, prices, bill)
    if args.output:
        _write_json(document, FileSystems.join(args.output.rstrip("/"), REPORT_NAME))
    print(json.dumps(document, indent=2) if args.json else format_bill(document))
    return 0


def estimate_pipeline_options(beam_flags: list[str]) -> PipelineOptions:
    """Beam options; locally one in-memory worker unless the flags say otherwise (it is light)."""
    flags = list(beam_flags)
    names = {f.split("=", 1)[0] for f in flags if f.startswith("--")}
    if "--direct_running_mode" not in names and pl.is_local(PipelineOptions(flags)):
        flags.append("--direct_running_mode=in_memory")
    return pl.pipeline_options(flags)


def _compare_models(text: str | None, prices: Mapping[str, ModelPrice]) -> tuple[str, ...] | None:
    """--compare-models as a tuple (None = the default choice); unknown names are an error."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    missing = [n for n in names if n not in prices]
    if missing:
        raise ConfigError(f"--compare-models: no price for {', '.join(missing)} (known: "
                          f"{', '.join(sorted(prices))}; add models with --prices FILE)")
    return names


@contextlib.contextmanager
def _work_dir(output: str | None) -> Iterator[str]:
    """Where the pipeline leaves its tally: --output (remote runs) or a local temporary dir."""
    if output:
        yield output.rstrip("/")
        return
    with tempfile.TemporaryDirectory(prefix="beam-caption-estimate-") as tmp:
        yield tmp


def run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig `run` would build from the same flags (so the prompt sent is the same)."""
    # --output is optional here; nothing below uses it.
    return build_run_config(argparse.Namespace(**{**vars(args), "output": args.output or ""}),
                            workers=1)


def run_pipeline(options: PipelineOptions, refs: ExpandInputs, spec: TokenSpec,
                 sample: int | None, tally_path: str, *,
                 library: LibrarySettings | None = None) -> dict[str, Any]:
    """ExpandInputs -> SortLibrary -> EstimateTokens -> one JSON file; waits and returns the
    tally dict, with the files `run` would skip counted by kind."""
    runner, run_options = pl.make_runner(options)
    p = beam.Pipeline(runner=runner, options=run_options)
    buckets = LOCAL_BUCKETS if pl.is_local(options) else None
    files = p | "ExpandInputs" >> refs | "SortLibrary" >> SortLibrary(library, buckets=buckets)
    skipped = (files.skipped
               | "SkippedKinds" >> beam.Map(lambda row: (row["kind"], 1))
               | "CountKinds" >> beam.CombinePerKey(sum)
               | "AsDict" >> beam.combiners.ToDict())
    _ = (files.media
         | "EstimateTokens" >> EstimateTokens(spec, sample)
         | "WithSkipped" >> beam.Map(lambda t, s: {**t, "skipped": s},
                                     beam.pvalue.AsSingleton(skipped))
         | "WriteTally" >> beam.Map(_write_json, tally_path))
    p.run().wait_until_finish()
    with FileSystems.open(tally_path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def _write_json(data: Mapping[str, Any], path: str) -> None:
    """Write `data` as JSON to a FileSystems path (replaced if present)."""
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(data, indent=2).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# The printed table


def _side(side: int) -> str:
    return "original" if side == 0 else f"{side} px"


def _variant_rows(lines: Sequence[Mapping[str, Any]], label: str) -> list[list[str]]:
    rows = []
    for ln in lines:
        per_image = ln["input_tokens_per_image"]
        name = f"{ln['provider']}: {ln['model']}" if label == "provider" else ln["model"]
        rows.append([_side(ln["max_side"]) if label == "max_side" else name,
                     "-" if per_image is None else f"{per_image:,.0f}",
                     format_usd(ln["realtime_usd_per_1000"]), format_usd(ln["batch_usd_per_1000"]),
                     format_usd(ln["realtime_usd"]), format_usd(ln["realtime_usd_worst"])])
    return rows


def _library_lines(bill: Mapping[str, Any]) -> list[str]:
    """A phone library's lines: videos and their keyframes, skipped files, near-duplicates."""
    out = []
    if bill.get("videos"):
        out.append(f"  videos {bill['videos']:,} (among the images), sending "
                   f"{bill['video_frames']:,} keyframes")
    if bill.get("skipped"):
        kinds = ", ".join(f"{k} {n:,}" for k, n in bill["skipped"].items())
        out.append(f"  skipped {sum(bill['skipped'].values()):,} files, not sent ({kinds})")
    near = bill.get("near_duplicates")
    if near is not None:
        out.append(f"  --near-dedupe: {near['min']:,} to {near['max']:,} requests saved "
                   "(bursts are told apart by their pictures, which only the run decodes)")
    return out


def format_bill(bill: Mapping[str, Any]) -> str:
    """The bill (estimate/bill.py's bill_document) as the text `beam-caption estimate` prints."""
    ch = bill["chosen"]
    images = ch["images"]
    out = [f"beam-caption estimate (no API calls were made): model {bill['model']}, "
           f"max-side {_side(bill['max_side'])}",
           f"  files {bill['files']:,}: {images:,} images, {bill['unreadable']:,} unreadable",
           *_library_lines(bill)]
    sample = bill["sample"]
    if sample:
        out.append(f"  sampled: {sample['measured']:,} of {sample['files_total']:,} files measured "
                   f"(deterministic sample), totals scaled x{sample['scale']:,.2f}")
    out += [f"  input tokens  {ch['input_tokens']:,} ({ch['text_tokens']:,} text + "
            f"{ch['image_tokens']:,} image), {ch['input_tokens_per_image'] or 0:,.0f} per image",
            f"  output tokens {ch['output_tokens']:,} expected ({bill['expected_output_tokens']}"
            f" per image), {ch['output_tokens_worst']:,} worst case "
            f"({bill['max_output_tokens']} per image)",
            "",
            text_table(["cost", "realtime", "batch"],
                       [["expected output", format_usd(ch["realtime_usd"]),
                         format_usd(ch["batch_usd"])],
                        ["worst case", format_usd(ch["realtime_usd_worst"]),
                         format_usd(ch["batch_usd_worst"])],
                        ["per 1,000 images (expected)", format_usd(ch["realtime_usd_per_1000"]),
                         format_usd(ch["batch_usd_per_1000"])]],
                       numbers=True, marks=[False] * 3)]
    header = ["input tok/image", "realtime/1k", "batch/1k", "total", "worst case"]
    out += ["", text_table([f"model (max-side {_side(bill['max_side'])})", *header],
                           _variant_rows(bill["by_model"], "model"), numbers=True,
                           marks=[ln["model"] == bill["model"] for ln in bill["by_model"]]),
            "", text_table([f"cheapest of each provider (max-side {_side(bill['max_side'])})",
                            *header],
                           _variant_rows(bill["by_provider"], "provider"), numbers=True,
                           marks=[ln["model"] == bill["model"] for ln in bill["by_provider"]]),
            "", text_table([f"max-side ({bill['model']})", *header],
                           _variant_rows(bill["by_max_side"], "max_side"), numbers=True,
                           marks=[ln["max_side"] == bill["max_side"]
                                  for ln in bill["by_max_side"]])]
    if bill["unreadable_examples"]:
        codes = ", ".join(f"{c} {n}" for c, n in sorted(bill["unreadable_by_code"].items()))
        where = " in the sample" if sample else ""
        out += ["", f"unreadable{where} ({codes}):"]
        out += [f"  {e['code']}: {e['uri']}" for e in bill["unreadable_examples"]]
    out += [f"warning: {w}" for w in bill["warnings"]]
    return "\n".join(out)
