"""From `beam-caption run`'s flags to a validated RunConfig (what `estimate` builds too, so the
prompt it counts is the prompt a run would send). Raises ConfigError on a bad value or mix."""

from __future__ import annotations

import argparse
import logging

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_caption.api.providers import DEFAULT_PROVIDER, get_provider
from beam_caption.api.request import RequestSettings
from beam_caption.api.structured import BUILT_IN, StructuredSpec, load_spec
from beam_caption.auth.secrets import secret_version_name
from beam_caption.batch.formats import inline_wire
from beam_caption.config import (
    BatchConfig,
    CaptionConfig,
    RunConfig,
    new_run_id,
)
from beam_caption.cost.pricing import ModelPrice, load_prices, lookup_price
from beam_caption.engine.settings import EndpointConfig, LimitsConfig, resolve_base_url
from beam_caption.errors import ConfigError
from beam_caption.inputs.fetch import FetchSettings
from beam_caption.inputs.images import PrepareSettings
from beam_caption.inputs.library import LibrarySettings
from beam_caption.inputs.similar import NearSettings
from beam_caption.layout import run_journal_dir
from beam_caption.options import DEFAULT_PROMPT, DEFAULT_VIDEO_PROMPT

_LOG = logging.getLogger(__name__)


def settle_model(args: argparse.Namespace) -> None:
    """--model without a value: the provider's default model (api/providers/)."""
    if args.model is None:
        args.model = get_provider(getattr(args, "provider", None) or DEFAULT_PROVIDER).default_model


def build_run_config(args: argparse.Namespace, *, workers: int | None,
                     base_url: str | None = None, expected_images: int | None = None,
                     control_dir: str | None = None) -> RunConfig:
    """Validate the parsed flags once into a RunConfig.

    `workers`: how many worker processes will send requests (None: the runner's options do not
    say); `control_dir`: a local run's folder for progress snapshots and the interrupt flag.
    """
    if not args.input and not args.manifest:
        raise ConfigError("give at least one --input URI/glob or a --manifest file")
    settle_model(args)
    if args.resume and args.overwrite:
        raise ConfigError("--resume keeps the output and --overwrite replaces it: choose one")
    if args.near_dedupe and args.mode == "batch":
        raise ConfigError("--near-dedupe shares answers as they arrive: use it with --mode "
                          "realtime")
    prepare = PrepareSettings(max_side=args.max_side, jpeg_quality=args.jpeg_quality,
                              max_pixels=args.max_pixels, location=args.location,
                              video_frames=args.video_frames)
    fetch = FetchSettings(max_bytes=args.max_download_mb * 1024 * 1024,
                          timeout_s=args.download_timeout, allow_private=args.allow_private_urls)
    output = args.output.rstrip("/")
    caption = _caption_config(args, prepare, output, workers=workers, base_url=base_url,
                              expected_images=expected_images, control_dir=control_dir)
    skip = tuple(d.rstrip("/") for d in (args.incremental or ()))
    return RunConfig(inputs=tuple(args.input or ()), manifest=args.manifest, output=output,
                     overwrite=args.overwrite, prepare=prepare, fetch=fetch, caption=caption,
                     simulate=args.simulate, resume=args.resume,
                     skip_done_in=((output,) if args.resume else ()) + skip,
                     prompt_column=args.prompt_column, batch=_batch_config(args),
                     library=LibrarySettings(video=args.video,
                                             live_photo_motion=args.live_photo_motion),
                     near=(NearSettings(max_distance=args.near_dedupe_distance,
                                        seconds=args.near_dedupe_seconds)
                           if args.near_dedupe else None))


def _caption_config(args: argparse.Namespace, prepare: PrepareSettings, output: str, *,
                    workers: int | None, base_url: str | None, expected_images: int | None,
                    control_dir: str | None) -> CaptionConfig:
    structured = _structured_spec(args)
    price = lookup_price(load_prices(args.prices), args.model, price_as=args.price_as)
    if args.max_cost_usd and price is None:
        raise ConfigError(f"--max-cost-usd needs a price for {args.model}: name a known model "
                          "with --price-as, or add it with --prices")
    provider = getattr(args, "provider", None) or DEFAULT_PROVIDER
    adapter = get_provider(provider)
    endpoint = EndpointConfig(base_url=base_url or resolve_base_url(args.base_url, provider),
                              api_key_env=args.api_key_env or adapter.key_env,
                              api_key_file=args.api_key_file,
                              api_key_secret=_api_key_secret(args),
                              request_timeout_s=args.request_timeout,
                              provider=provider)
    limits = LimitsConfig(concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm,
                          workers=_worker_processes(args, workers),
                          max_attempts=args.max_attempts, retry_deadline_s=args.retry_deadline,
                          rate_limiter=args.rate_limiter,
                          workers_source="--workers-hint" if args.workers_hint else (
                              "the runner's options" if workers is not None else None))
    run_id = new_run_id()
    request = _request_settings(args, structured, price)
    adapter.check_settings(request)
    # Through chat completions any vendor's model may be served (a gateway); a native API
    # serves only its own.
    if provider != DEFAULT_PROVIDER and price is not None and price.provider != provider \
            and not args.price_as:
        _LOG.warning("--model %s is one of %s's models in the price table, but --provider is "
                     "%s: check the model name (or bill it as another with --price-as)",
                     args.model,
                     price.provider, provider)
    return CaptionConfig(request=request, endpoint=endpoint,
                         limits=limits, price=price, dedupe=args.dedupe, run_id=run_id,
                         prepare=prepare, max_cost_usd=args.max_cost_usd or None,
                         # Local runs show one live total instead of a line per worker.
                         progress_interval_s=0.0 if control_dir else args.progress_interval,
                         expected_images=expected_images, structured=structured,
                         control_dir=control_dir, interrupt_grace_s=args.interrupt_grace,
                         journal_dir=run_journal_dir(output, run_id), context=args.context,
                         video_prompt=args.video_prompt or DEFAULT_VIDEO_PROMPT)


# A JSON Schema is a few kilobytes; anything this large is the wrong file.
_MAX_SCHEMA_BYTES = 1024 * 1024


def _structured_spec(args: argparse.Namespace) -> StructuredSpec | None:
    """--schema: a built-in name, or a JSON Schema file read here, through Beam FileSystems, so a
    local path and gs:// both work (a Flex Template's launcher has only gs:// to read from)."""
    if not args.schema:
        return None
    # A built-in name wins over a file of that name; a missing file is load_spec's error.
    text = None if args.schema in BUILT_IN else _read_schema(args.schema)
    return load_spec(args.schema, args.schema_mode, text=text)


def _read_schema(path: str) -> str | None:
    """The schema file's text, or None when there is no such file; ConfigError (one line) when
    it cannot be read."""
    try:
        if not FileSystems.exists(path):
            return None
        # UNCOMPRESSED: Beam's default (AUTO) would gunzip a file named *.gz behind our back.
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = handle.read(_MAX_SCHEMA_BYTES + 1)
    except Exception as exc:  # an unknown scheme (ValueError), BeamIOError, auth errors
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"cannot read --schema {path} ({type(exc).__name__}: {detail})") from None
    if len(data) > _MAX_SCHEMA_BYTES:
        raise ConfigError(f"--schema {path} is larger than {_MAX_SCHEMA_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--schema {path} is not UTF-8 text") from None


def _request_settings(args: argparse.Namespace, structured: StructuredSpec | None,
                      price: ModelPrice | None) -> RequestSettings:
    reasoning = price.reasoning if price else args.model.startswith(("gpt-5", "o1", "o3", "o4"))
    if args.temperature is not None and reasoning:
        raise ConfigError(f"--temperature is not accepted by reasoning model {args.model}; "
                          "leave it out")
    if args.token_param == "max_tokens" and reasoning:
        raise ConfigError(f"{args.model} rejects max_tokens; leave --token-param at its default")
    prompt = args.prompt or (structured.default_prompt if structured else None) or DEFAULT_PROMPT
    return RequestSettings(
        model=args.model, prompt=prompt + (structured.prompt_suffix() if structured else ""),
        system_prompt=args.system_prompt, detail=args.detail,
        max_output_tokens=args.max_output_tokens, temperature=args.temperature,
        token_param=args.token_param,
        response_format=structured.response_format() if structured else None)


def _worker_processes(args: argparse.Namespace, known: int | None) -> int:
    """The processes that share --rpm/--tpm/--max-cost-usd; refuses a cap it cannot divide."""
    if args.workers_hint:
        return args.workers_hint
    if known is not None:
        return known
    if args.max_cost_usd:
        raise ConfigError("--max-cost-usd needs the number of worker processes to divide the cap "
                          "among them, and this runner's options do not fix it: pass "
                          "--max_num_workers (and --machine_type), or --workers-hint N with the "
                          "most worker processes the job may run")
    if (args.rpm or args.tpm) and not args.rate_limiter:
        _LOG.warning("the number of worker processes is unknown (no --max_num_workers and no "
                     "--workers-hint): each process assumes it has the whole --rpm/--tpm; "
                     "give --max_num_workers, or --rate-limiter for one job-wide limit")
    return 1


def _batch_config(args: argparse.Namespace) -> BatchConfig:
    adapter = get_provider(getattr(args, "provider", None) or DEFAULT_PROVIDER)
    # Each provider's own batch limits bound the flags (Gemini's inline batches: 20 MB).
    batch = BatchConfig(mode=args.mode, wait=args.wait, poll_interval_s=args.poll_interval,
                        max_lines=min(args.batch_max_lines, adapter.batch_max_lines),
                        max_bytes=min(args.batch_max_bytes, adapter.batch_max_bytes))
    if batch.enabled and adapter.name != DEFAULT_PROVIDER:
        inline_wire(adapter.name)  # ConfigError for a provider without batch mode
    if batch.enabled and args.max_cost_usd:
        # The cap is enforced by the realtime engine as answers arrive; a batch is paid for
        # whole. `beam-caption estimate` tells the cost before submitting.
        raise ConfigError("--max-cost-usd applies to --mode realtime; check a batch's cost "
                          "first with `beam-caption estimate`")
    return batch


def _api_key_secret(args: argparse.Namespace) -> str | None:
    """--api-key-secret checked and completed in the launcher, so a typo fails before the job."""
    name = getattr(args, "api_key_secret", None)
    return secret_version_name(name) if name else None
