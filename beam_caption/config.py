"""Frozen, picklable configuration built once from the options; what the DoFns receive.

Nothing here holds an API key: only where to find it (an environment variable name or a file
path), resolved on the worker in DoFn.setup (beam_caption.auth.keys).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beam_caption.api.request import RequestSettings, request_key
from beam_caption.api.structured import StructuredSpec, load_spec
from beam_caption.auth.secrets import secret_version_name
from beam_caption.cost import tokens
from beam_caption.cost.pricing import ModelPrice, load_prices
from beam_caption.engine.progress import ProgressSettings
from beam_caption.engine.run_state import RunSettings
from beam_caption.errors import ConfigError
from beam_caption.inputs.fetch import FetchSettings
from beam_caption.inputs.images import PrepareSettings
from beam_caption.options import DEFAULT_BASE_URL, DEFAULT_MODEL, DEFAULT_PROMPT
from beam_caption.pipeline.journal import run_journal_dir

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointConfig:
    """Where requests go and where the key is found (never the key itself)."""

    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: str | None = None
    # A Secret Manager version name (not the key): read on the worker (beam_caption.auth.secrets).
    api_key_secret: str | None = None
    request_timeout_s: float = 120.0
    connect_timeout_s: float = 10.0

    @property
    def chat_completions_url(self) -> str:
        """The chat completions endpoint under base_url."""
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass(frozen=True)
class LimitsConfig:
    """Per-process request engine limits (global limits already divided by `workers`)."""

    concurrency: int = 32
    rpm: float = 0.0
    tpm: float = 0.0
    workers: int = 1
    max_attempts: int = 6
    retry_deadline_s: float = 900.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    # A terminal error (bad key, no quota, a 400 every image gets) stops the run after this many
    # consecutive identical failures with no success in between.
    abort_after_identical_failures: int = 8

    @property
    def rpm_per_worker(self) -> float:
        """This process's share of the account's requests-per-minute limit."""
        return self.rpm / self.workers if self.rpm else 0.0

    @property
    def tpm_per_worker(self) -> float:
        """This process's share of the account's tokens-per-minute limit."""
        return self.tpm / self.workers if self.tpm else 0.0


@dataclass(frozen=True)
class RunInfo:
    """What run-summary.json and batches.json say about a run (the key is never part of it)."""

    run_id: str
    model: str
    prompt: str
    base_url: str
    max_side: int
    max_cost_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        """A RunInfo from `as_dict`'s shape (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CaptionConfig:
    """Everything CaptionImages needs: request, endpoint, limits, price, and where answers go."""

    request: RequestSettings
    endpoint: EndpointConfig
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    price: ModelPrice | None = None
    dedupe: bool = True
    run_id: str = ""
    max_cost_usd: float | None = None
    progress_interval_s: float = 10.0
    expected_images: int | None = None
    structured: StructuredSpec | None = None
    # Local runs: the launcher's folder for progress snapshots and the interrupt flag.
    control_dir: str | None = None
    # Where each worker process appends the answers it paid for, as they arrive (journal.py);
    # None keeps answers only in the pipeline (a composed pipeline that writes them itself).
    journal_dir: str | None = None
    # After Ctrl-C, requests already in flight get this long to bring their answers home.
    interrupt_grace_s: float = 30.0
    # Settings that change the image sent, hence the answer; part of the request key.
    prepare: PrepareSettings = field(default_factory=PrepareSettings)

    @property
    def progress_settings(self) -> ProgressSettings:
        """How workers report progress."""
        return ProgressSettings(self.progress_interval_s, self.expected_images, self.control_dir)

    def prompt_for(self, row_prompt: str | None) -> str | None:
        """The prompt to send for an image whose manifest row has `row_prompt` (None: default)."""
        if row_prompt is None:
            return None
        return row_prompt + (self.structured.prompt_suffix() if self.structured else "")

    def request_key(self, image_id: str, row_prompt: str | None = None) -> str:
        """The one request_key derivation: the image's sha256 plus everything that shapes the
        answer (model, prompt, generation and preparation settings)."""
        params = {**self.request.key_params(self.prompt_for(row_prompt)),
                  "max_side": self.prepare.max_side, "jpeg_quality": self.prepare.jpeg_quality}
        return request_key(image_id, params)

    def estimated_prompt_tokens(self, sent_size: tuple[int, int],
                                row_prompt: str | None = None) -> int:
        """Prompt tokens one image's request should cost, by the published rules."""
        req = self.request
        texts = [t for t in (req.system_prompt, self.prompt_for(row_prompt) or req.prompt) if t]
        rule = self.price.image_tokens if self.price else None
        return tokens.chat_prompt_tokens(rule, texts, len(texts), [sent_size], req.detail)

    def run_settings(self) -> RunSettings:
        """What a worker process keeps about this run (spend share, journal, interrupt flag)."""
        share = self.max_cost_usd / self.limits.workers if self.max_cost_usd else None
        return RunSettings(run_id=self.run_id, spend_share_usd=share,
                           max_cost_usd=self.max_cost_usd, control_dir=self.control_dir,
                           grace_s=self.interrupt_grace_s, progress=self.progress_settings,
                           abort_after_identical_failures=(
                               self.limits.abort_after_identical_failures))

    def run_info(self) -> RunInfo:
        """What the run's summary and ledger say about it."""
        return RunInfo(run_id=self.run_id, model=self.request.model, prompt=self.request.prompt,
                       base_url=self.endpoint.base_url, max_side=self.prepare.max_side,
                       max_cost_usd=self.max_cost_usd)

    @classmethod
    def create(cls, *, model: str = DEFAULT_MODEL, prompt: str = DEFAULT_PROMPT,
               base_url: str | None = None, output: str | None = None,
               max_side: int = 512, max_output_tokens: int = 60, concurrency: int = 32,
               rpm: float = 0.0, tpm: float = 0.0, workers: int = 1,
               max_cost_usd: float | None = None, api_key_env: str = "OPENAI_API_KEY",
               api_key_secret: str | None = None, prices: str | None = None,
               run_id: str | None = None, **request: Any) -> CaptionConfig:
        """A CaptionConfig for composing CaptionImages into your own pipeline.

        `base_url` defaults to $OPENAI_BASE_URL, else OpenAI; the key is read on the workers from
        `api_key_env` (or Secret Manager: `api_key_secret`). With `output`, each worker process
        journals the answers it paid for under OUTPUT/_journal/<run_id>/ (WriteCaptions deletes
        it once the Parquet files are written). `workers` is how many processes share `rpm`,
        `tpm` and `max_cost_usd`. Further RequestSettings fields (system_prompt, detail,
        temperature, token_param, response_format) pass through `request`.
        """
        price = load_prices(prices).get(model)
        if max_cost_usd and price is None:
            raise ConfigError(f"max_cost_usd needs a price for {model}: pass prices=FILE")
        run_id = run_id or new_run_id()
        output = output.rstrip("/") if output else None
        return cls(request=RequestSettings(model=model, prompt=prompt,
                                           max_output_tokens=max_output_tokens, **request),
                   endpoint=EndpointConfig(base_url=_resolve_base_url(base_url),
                                           api_key_env=api_key_env,
                                           api_key_secret=(secret_version_name(api_key_secret)
                                                           if api_key_secret else None)),
                   limits=LimitsConfig(concurrency=concurrency, rpm=rpm, tpm=tpm,
                                       workers=workers),
                   price=price, run_id=run_id, max_cost_usd=max_cost_usd or None,
                   prepare=PrepareSettings(max_side=max_side),
                   journal_dir=run_journal_dir(output, run_id) if output else None)

    def engine_key(self) -> tuple[Any, ...]:
        """Identity of the per-process engine: DoFns with equal keys share one engine (the
        transport and the pacing; requests, prices and budgets stay per job)."""
        return (self.endpoint, self.limits, self.request.model)


@dataclass(frozen=True)
class BatchConfig:
    """Batch API mode (`--mode batch`): the file limits and how the launcher waits."""

    mode: str = "realtime"
    wait: bool = True
    poll_interval_s: float = 30.0
    max_lines: int = 50_000
    max_bytes: int = 200_000_000

    @property
    def enabled(self) -> bool:
        """True for --mode batch."""
        return self.mode == "batch"


@dataclass(frozen=True)
class RunConfig:
    """A whole `run`: inputs, preparation, captioning and output."""

    inputs: tuple[str, ...]
    manifest: str | None
    output: str
    overwrite: bool
    prepare: PrepareSettings
    fetch: FetchSettings
    caption: CaptionConfig
    simulate: bool = False
    resume: bool = False
    skip_done_in: tuple[str, ...] = ()  # outputs whose captions' request_keys are not re-sent
    prompt_column: str = "prompt"
    batch: BatchConfig = field(default_factory=BatchConfig)


def new_run_id() -> str:
    """A sortable, unique id for one run: UTC time plus a short random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _resolve_base_url(flag_value: str | None) -> str:
    url = flag_value or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--base-url must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def _model_price(model: str, prices_path: str | None) -> ModelPrice | None:
    return load_prices(prices_path).get(model)


def build_run_config(args: argparse.Namespace, *, workers: int | None,
                     base_url: str | None = None, expected_images: int | None = None,
                     control_dir: str | None = None) -> RunConfig:
    """Validate the parsed flags once into a RunConfig; raises ConfigError on bad values.

    `workers`: how many worker processes will send requests (None: the runner's options do not
    say); `control_dir`: a local run's folder for progress snapshots and the interrupt flag.
    """
    if not args.input and not args.manifest:
        raise ConfigError("give at least one --input URI/glob or a --manifest file")
    if args.temperature is not None and _is_reasoning_model(args.model, args.prices):
        raise ConfigError(f"--temperature is not accepted by reasoning model {args.model}; "
                          "leave it out")
    prepare = PrepareSettings(max_side=args.max_side, jpeg_quality=args.jpeg_quality,
                              max_pixels=args.max_pixels)
    fetch = FetchSettings(max_bytes=args.max_download_mb * 1024 * 1024,
                          timeout_s=args.download_timeout, allow_private=args.allow_private_urls)
    if args.token_param == "max_tokens" and _is_reasoning_model(args.model, args.prices):
        raise ConfigError(f"{args.model} rejects max_tokens; leave --token-param at its default")
    structured = load_spec(args.schema, args.schema_mode) if args.schema else None
    prompt = args.prompt or (structured.default_prompt if structured else None) or DEFAULT_PROMPT
    request = RequestSettings(
        model=args.model, prompt=prompt + (structured.prompt_suffix() if structured else ""),
        system_prompt=args.system_prompt, detail=args.detail,
        max_output_tokens=args.max_output_tokens, temperature=args.temperature,
        token_param=args.token_param,
        response_format=structured.response_format() if structured else None)
    endpoint = EndpointConfig(base_url=base_url or _resolve_base_url(args.base_url),
                              api_key_env=args.api_key_env, api_key_file=args.api_key_file,
                              api_key_secret=_api_key_secret(args),
                              request_timeout_s=args.request_timeout or 120.0)
    limits = LimitsConfig(concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm,
                          workers=_worker_processes(args, workers),
                          max_attempts=args.max_attempts, retry_deadline_s=args.retry_deadline)
    price = _model_price(args.model, args.prices)
    if args.max_cost_usd and price is None:
        raise ConfigError(f"--max-cost-usd needs a price for {args.model}: add it with --prices")
    if args.resume and args.overwrite:
        raise ConfigError("--resume keeps the output and --overwrite replaces it: choose one")
    output = args.output.rstrip("/")
    run_id = new_run_id()
    caption = CaptionConfig(request=request, endpoint=endpoint, limits=limits, price=price,
                            dedupe=args.dedupe, run_id=run_id, prepare=prepare,
                            max_cost_usd=args.max_cost_usd or None,
                            # Local runs show one live total instead of a line per worker.
                            progress_interval_s=0.0 if control_dir else args.progress_interval,
                            expected_images=expected_images, structured=structured,
                            control_dir=control_dir, interrupt_grace_s=args.interrupt_grace,
                            journal_dir=run_journal_dir(output, run_id))
    skip = tuple(d.rstrip("/") for d in (args.incremental or ()))
    return RunConfig(inputs=tuple(args.input or ()), manifest=args.manifest, output=output,
                     overwrite=args.overwrite, prepare=prepare, fetch=fetch, caption=caption,
                     simulate=args.simulate, resume=args.resume,
                     skip_done_in=((output,) if args.resume else ()) + skip,
                     prompt_column=args.prompt_column, batch=_batch_config(args))


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
    if args.rpm or args.tpm:
        _LOG.warning("the number of worker processes is unknown (no --max_num_workers and no "
                     "--workers-hint): each process assumes it has the whole --rpm/--tpm")
    return 1


def _batch_config(args: argparse.Namespace) -> BatchConfig:
    batch = BatchConfig(mode=args.mode, wait=args.wait, poll_interval_s=args.poll_interval,
                        max_lines=args.batch_max_lines, max_bytes=args.batch_max_bytes)
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


def _is_reasoning_model(model: str, prices_path: str | None) -> bool:
    price = load_prices(prices_path).get(model)
    if price is not None:
        return price.reasoning
    return model.startswith(("gpt-5", "o1", "o3", "o4"))
