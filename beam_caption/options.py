"""Every `beam-caption run` flag, its default and its help text, in one place.

The flags are declared once as data (`RUN_OPTIONS`), so the CLI's argparse parser and the Flex
Template's metadata.json are both generated from the same table and cannot drift apart. Flags not
declared here pass through to Beam's PipelineOptions.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from beam_caption import flag_types as ft

DEFAULT_MODEL = "gpt-5.4-nano"
DEFAULT_PROMPT = "Describe this photo in one sentence."
DEFAULT_VIDEO_PROMPT = ("These images are frames of one video clip, in time order. Describe the "
                        "clip in one sentence.")
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Option:
    """One flag: its name (with dashes), how argparse parses it, and its help."""

    flag: str
    help: str
    group: str
    type: Any = str
    default: Any = None
    choices: tuple[str, ...] | None = None
    action: str | None = None  # "append", "store_true", BooleanOptionalAction
    metavar: str | None = None
    required: bool = False

    @property
    def dest(self) -> str:
        """The attribute name argparse gives this flag."""
        return self.flag.lstrip("-").replace("-", "_")



INPUT, IMAGE, MODEL, ENDPOINT, ENGINE, BATCH, OUTPUT = (
    "inputs", "image preparation", "model and prompt", "endpoint and key",
    "request engine", "batch mode", "output")

RUN_OPTIONS: tuple[Option, ...] = (
    # inputs
    Option("--input", "image URIs: a glob (local, gs://, s3://; ** recurses) or an https:// URL; "
           "repeat the flag for more", INPUT, action="append", metavar="URI"),
    Option("--manifest", "a file (or a glob of files) listing images: .txt (one URI per line; "
           "lines starting with # are comments: write ./#1.jpg for such a name), "
           ".csv/.jsonl/.parquet with a 'uri' column and optional 'id' and 'prompt' columns, or "
           "a Cloud Storage inventory report (.csv/.parquet with 'bucket', 'name' and ideally "
           "'size', 'updated'); read in ranges across workers, the way to give a huge bucket",
           INPUT, metavar="FILE"),
    Option("--prompt-column", "manifest column (or JSON key) holding a per-image prompt that "
           "replaces --prompt for that image", INPUT, default="prompt", metavar="NAME"),
    Option("--allow-private-urls", "let https:// inputs reach loopback, private and link-local "
           "addresses (refused by default: URL fetching is made on the user's behalf)", INPUT,
           action="store_true", default=False),
    Option("--max-download-mb", "largest image file read or downloaded, in MB", INPUT,
           type=ft.positive_int, default=50, metavar="MB"),
    Option("--download-timeout", "seconds allowed for one https:// image download", INPUT,
           type=ft.non_negative_float, default=30.0, metavar="S"),
    # image preparation
    Option("--max-side", "shrink images so the longer side is at most this many pixels before "
           "sending (fewer image tokens); 0 sends the original size", IMAGE,
           type=ft.non_negative_int, default=512, metavar="PX"),
    Option("--jpeg-quality", "JPEG quality of the re-encoded image sent to the model", IMAGE,
           type=ft.quality, default=85, metavar="Q"),
    Option("--max-pixels", "decompression-bomb guard: images with more pixels become "
           "too_many_pixels error rows", IMAGE, type=ft.positive_int, default=89_478_485,
           metavar="N"),
    Option("--video", "videos (MOV, MP4, ...): keyframes sends evenly spaced frames of each "
           "clip in one request for one caption; skip counts them as skipped",
           IMAGE, default="keyframes", choices=("keyframes", "skip")),
    Option("--live-photo-motion", "caption a Live Photo's motion part (a video beside a still of "
           "the same name) as a video too; by default it is skipped, since its still is "
           "captioned", IMAGE, action="bool", default=False),
    Option("--video-frames", "keyframes sent for one video, evenly spaced through the clip; "
           "billed as that many images (1 to 32)", IMAGE, type=ft.video_frames, default=4,
           metavar="N"),
    Option("--location", "keep GPS positions: the gps_* columns and the place in --context's "
           "line; --no-location drops both (privacy)", IMAGE, action="bool", default=True),
    # model and prompt
    Option("--model", f"model name as the endpoint knows it (default: {DEFAULT_MODEL}; "
           "claude-haiku-4-5 with --provider anthropic, gemini-2.5-flash-lite with --provider "
           "gemini)", MODEL),
    Option("--price-as", "bill --model at this known model's price and image-token rule: for an "
           "Azure deployment or a gateway alias whose name is not in the price table (gateway "
           "prefixes such as openai/ and dated snapshots are recognised without it)", MODEL,
           metavar="MODEL"),
    Option("--prompt", "the instruction sent with every image (default: "
           f"'{DEFAULT_PROMPT}', or the built-in schema's own prompt with --schema NAME)", MODEL),
    Option("--system-prompt", "an optional system message", MODEL),
    Option("--video-prompt", "the instruction sent with a video's frames (default: "
           f"'{DEFAULT_VIDEO_PROMPT}')", MODEL),
    Option("--context", "exif: add a short factual line to each photo's prompt from its "
           "capture time and place ('Taken 2024-07-03 18:40 near Lisbon, Portugal.'; places "
           "from an offline geocoder); part of the request key", MODEL, default="none",
           choices=("none", "exif")),
    Option("--detail", "image detail level sent to the API (low is cheapest on tile models)",
           MODEL, default="auto", choices=("auto", "low", "high")),
    Option("--max-output-tokens", "cap on the answer's tokens (sent as max_completion_tokens); "
           "bounds the cost of each caption", MODEL, type=ft.positive_int, default=60, metavar="N"),
    Option("--temperature", "sampling temperature (not sent unless given; reasoning models such "
           "as gpt-5* and o* accept only their default)", MODEL, type=ft.temperature),
    Option("--schema", "structured answers: a JSON Schema file, or a built-in: tags, objects, "
           "ocr, moderation, alt-text; its top-level properties become typed Parquet columns and "
           "answers that do not validate become schema_mismatch error rows", MODEL,
           metavar="FILE|NAME"),
    Option("--schema-mode", "how --schema is requested: json_schema (response_format, strict) or "
           "prompt (the schema in the prompt, for providers without json_schema support)", MODEL,
           default="json_schema", choices=("json_schema", "prompt")),
    Option("--token-param", "name of the answer-cap parameter; old OpenAI-compatible servers may "
           "want max_tokens", MODEL, default="max_completion_tokens",
           choices=("max_completion_tokens", "max_tokens")),
    # endpoint and key
    Option("--provider", "the API spoken: openai (chat completions: OpenAI, gateways such as "
           "LiteLLM and OpenRouter, vLLM, llama.cpp, Ollama), anthropic (Messages API) or "
           "gemini (generateContent)", ENDPOINT, default="openai", metavar="NAME"),
    Option("--base-url", "the provider's endpoint (default: $OPENAI_BASE_URL, else "
           f"{DEFAULT_BASE_URL}; with --provider anthropic $ANTHROPIC_BASE_URL, else "
           "https://api.anthropic.com; with gemini $GEMINI_BASE_URL, else "
           "https://generativelanguage.googleapis.com)", ENDPOINT, metavar="URL"),
    Option("--api-key-env", "name of the environment variable holding the API key (read on the "
           "workers, never stored in options; default: OPENAI_API_KEY, or ANTHROPIC_API_KEY / "
           "GEMINI_API_KEY with --provider)", ENDPOINT, metavar="NAME"),
    Option("--api-key-file", "read the API key from this file instead (first line)", ENDPOINT,
           metavar="FILE"),
    Option("--api-key-secret", "read the API key from Google Secret Manager on the workers: "
           "projects/P/secrets/S/versions/V (use this on Dataflow; needs beam-caption[secrets])",
           ENDPOINT, metavar="NAME"),
    Option("--simulate", "start the local simulator in this process and send every request to it "
           "(no key needed, captions are synthetic)", ENDPOINT, action="store_true", default=False),
    # request engine
    Option("--concurrency", "requests in flight per worker process: 'auto' sizes it from the "
           "measured latency and how fast images are prepared (from 32, between 8 and 512; 0 "
           "means auto too), N fixes it; 429s halve it either way", ENGINE,
           type=ft.concurrency, default=0, metavar="auto|N"),
    Option("--rpm", "the account's requests-per-minute limit, shared by all workers (0 = none)",
           ENGINE, type=ft.rate_limit, default=0.0, metavar="N"),
    Option("--tpm", "the account's tokens-per-minute limit, shared by all workers (0 = none)",
           ENGINE, type=ft.rate_limit, default=0.0, metavar="N"),
    Option("--rate-limiter", "share --rpm/--tpm across every worker through an Envoy rate-limit "
           "service instead of dividing them: envoy://HOST:PORT[/DOMAIN] (domain default "
           "beam-caption; descriptors limit=rpm with 1 hit per request, limit=tpm with the "
           "request's estimated tokens)", ENGINE, metavar="URL"),
    Option("--workers-hint", "expected number of worker processes, to divide --rpm/--tpm/"
           "--max-cost-usd; default: from the runner's options", ENGINE, type=ft.positive_int,
           metavar="N"),
    Option("--max-attempts", "attempts per image for retryable failures (429, 5xx, timeouts)",
           ENGINE, type=ft.positive_int, default=6, metavar="N"),
    Option("--request-timeout", "seconds allowed for one request before it is retried", ENGINE,
           type=ft.positive_float, default=120.0, metavar="S"),
    Option("--retry-deadline", "seconds after an image's first attempt when it stops being retried",
           ENGINE, type=ft.non_negative_float, default=900.0, metavar="S"),
    Option("--near-dedupe", "caption a burst once: photos from the same camera taken seconds "
           "apart whose thumbnails look near-identical get the first one's caption "
           "(deduplicated_from, cost_usd 0); the summary says how many requests and dollars "
           "it saved", ENGINE, action="store_true", default=False),
    Option("--near-dedupe-distance", "--near-dedupe: bits of the 256-bit thumbnail hash that "
           "may differ (0 to 256)", ENGINE, type=ft.int_between(0, 256), default=24,
           metavar="BITS"),
    Option("--near-dedupe-seconds", "--near-dedupe: most seconds between two shots of a burst",
           ENGINE, type=ft.non_negative_float, default=10.0, metavar="S"),
    Option("--dedupe", "send identical images (same bytes and settings) once per worker process "
           "and reuse the answer", ENGINE, action="bool", default=True),
    Option("--max-cost-usd", "spend cap for the run in USD: each worker process stops sending "
           "when its share (cap / expected processes) is spent; unsent images become "
           "budget_exceeded error rows that --resume picks up (0 = no cap)", ENGINE,
           type=ft.non_negative_float, default=0.0, metavar="USD"),
    Option("--interrupt-grace", "after Ctrl-C (or SIGTERM), seconds that requests already in "
           "flight get to bring their answers home before the run writes what it has and "
           "stops; a second Ctrl-C stops at once", ENGINE, type=ft.non_negative_float,
           default=30.0, metavar="S"),
    Option("--progress-interval", "seconds between progress log lines per worker process "
           "(0 = none)", ENGINE, type=ft.non_negative_float, default=10.0, metavar="S"),
    Option("--prices", "a JSON price table that overrides or adds models (same shape as "
           "beam_caption/cost/prices.json)", ENGINE, metavar="FILE"),
    # batch mode
    Option("--mode", "realtime: chat completions as fast as the limits allow; batch: the Batch "
           "API (half price, answers within 24 h; see `beam-caption batch --help`)", BATCH,
           default="realtime", choices=("realtime", "batch")),
    Option("--wait", "batch mode: wait for the batches and collect their rows; with --no-wait "
           "return after submitting (collect later with `beam-caption batch collect OUTPUT`)",
           BATCH, action="bool", default=True),
    Option("--poll-interval", "batch mode: seconds between status checks while batches "
           "progress (the first checks come sooner); the wait doubles while nothing changes, up "
           "to 10 times this", BATCH,
           type=ft.positive_float, default=30.0, metavar="S"),
    Option("--batch-max-lines", "batch mode: most requests per batch input file (the API's "
           "limit is 50,000)", BATCH, type=ft.positive_int, default=50_000, metavar="N"),
    Option("--batch-max-bytes", "batch mode: largest batch input file in bytes (the API's limit "
           "is 200 MB; base64 images usually reach it before the line limit)", BATCH,
           type=ft.positive_int, default=200_000_000, metavar="BYTES"),
    # output
    Option("--output", "output directory (local or gs://) for captions-*.parquet, "
           "errors-*.parquet and run-summary.json", OUTPUT, metavar="DIR", required=True),
    Option("--overwrite", "replace the captions, errors and summary already in --output", OUTPUT,
           action="store_true", default=False),
    Option("--resume", "keep what --output already holds and caption only images whose "
           "request_key (image bytes + model + prompt + settings) has no captions row yet; "
           "earlier error rows are replaced by this run's", OUTPUT, action="store_true",
           default=False),
    Option("--incremental", "skip images already captioned (same request_key) in this earlier "
           "output; repeatable; for a growing library", OUTPUT, action="append", metavar="DIR"),
)


def add_caption_arguments(parser: argparse.ArgumentParser, *,
                          enforce_required: bool = True) -> None:
    """Add every RUN_OPTIONS flag to `parser`, grouped as in --help."""
    groups: dict[str, Any] = {}
    for opt in RUN_OPTIONS:
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = parser.add_argument_group(opt.group)
        kwargs: dict[str, Any] = {"help": _help_with_default(opt), "dest": opt.dest}
        if opt.action == "bool":
            kwargs.update(action=argparse.BooleanOptionalAction, default=opt.default)
        elif opt.action == "store_true":
            kwargs.update(action="store_true", default=bool(opt.default))
        else:
            kwargs.update(type=opt.type, default=opt.default, metavar=opt.metavar)
            if opt.action:
                kwargs["action"] = opt.action
            if opt.choices:
                kwargs["choices"] = opt.choices
        if opt.required and enforce_required:
            kwargs["required"] = True
        group.add_argument(opt.flag, **kwargs)


def _help_with_default(opt: Option) -> str:
    if opt.default in (None, False) or opt.action in ("append", "store_true"):
        return opt.help
    return f"{opt.help} (default: {opt.default})"


def unknown_beam_flags(flags: list[str]) -> list[str]:
    """The flags in `flags` that neither beam-caption nor any Beam PipelineOptions class knows."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(flags)
    return unknown


def refuse_unknown(flags: list[str], command: str) -> None:
    """ConfigError naming the first of `flags` no option takes: an unknown option, or a bare
    argument (most often the second file of a glob the shell expanded: Beam would only warn,
    and the run would caption the first file alone)."""
    from beam_caption.errors import ConfigError

    unknown = unknown_beam_flags(flags)
    if not unknown:
        return
    first = unknown[0]
    if first.startswith("-"):
        raise ConfigError(f"unrecognized option {first} (not a beam-caption or Beam pipeline "
                          f"option; see beam-caption {command} --help)")
    raise ConfigError(f"unexpected argument {first!r}: if your shell expanded a glob into "
                      f"{len(unknown) + 1} files, quote it (--input 'photos/*.jpg') so that "
                      "beam-caption lists them; one --input per path or glob")
