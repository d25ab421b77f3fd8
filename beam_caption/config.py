"""Frozen, picklable configuration: what a run is, and what the DoFns receive.

`beam-caption run` builds it once from its flags (cli/run_config.py); a Beam user builds a
CaptionConfig with `CaptionConfig.create(...)`. Nothing here holds an API key: only where to find
it (an environment variable, a file or a secret's name), resolved on the worker (auth/keys.py).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from beam_caption.api.providers import DEFAULT_PROVIDER, get_provider
from beam_caption.api.request import RequestSettings, request_key
from beam_caption.api.structured import StructuredSpec
from beam_caption.auth.secrets import secret_version_name
from beam_caption.cost import tokens
from beam_caption.cost.pricing import ModelPrice, load_prices, lookup_price
from beam_caption.engine.progress import ProgressSettings
from beam_caption.engine.run_state import RunSettings
from beam_caption.engine.settings import EndpointConfig, LimitsConfig, resolve_base_url
from beam_caption.errors import ConfigError
from beam_caption.inputs.context import context_line
from beam_caption.inputs.fetch import FetchSettings
from beam_caption.inputs.images import PreparedImage, PrepareSettings
from beam_caption.inputs.kinds import media_type_of
from beam_caption.inputs.library import LibrarySettings
from beam_caption.inputs.metadata import PhotoMeta
from beam_caption.inputs.similar import NearSettings
from beam_caption.layout import run_journal_dir
from beam_caption.options import (
    DEFAULT_PROMPT,
    DEFAULT_VIDEO_PROMPT,
)


@dataclass(frozen=True)
class RunInfo:
    """What run-summary.json and batches.json say about a run (the key is never part of it)."""

    run_id: str
    model: str
    prompt: str
    base_url: str
    max_side: int
    max_cost_usd: float | None = None
    provider: str = DEFAULT_PROVIDER  # the API spoken (api/providers/)

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        """A RunInfo from `as_dict`'s shape (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class ImageRequest(NamedTuple):
    """One image's request as its transform builds it (CaptionConfig.image_request)."""

    prompt: str | None  # None: the settings' prompt
    images: bytes | tuple[bytes, ...]  # a JPEG, or a video's keyframes
    key: str
    estimated_prompt_tokens: int


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
    # Where each worker process appends the answers it paid for, as they arrive
    # (pipeline/journal.py); None keeps answers only in the pipeline (a composed pipeline that
    # writes them itself).
    journal_dir: str | None = None
    # After Ctrl-C, requests already in flight get this long to bring their answers home.
    interrupt_grace_s: float = 30.0
    # Settings that change the image sent, hence the answer; part of the request key.
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    # --context exif: a line of capture facts added to each prompt (inputs/context.py). The
    # line follows from the image's bytes (its EXIF) and this setting, so the mode, not the
    # line, is part of the request key: --resume recomputes keys from the bytes alone.
    context: str = "none"
    # What a video's frames are sent with (--video-prompt); part of a video's request key.
    video_prompt: str = DEFAULT_VIDEO_PROMPT

    @property
    def progress_settings(self) -> ProgressSettings:
        """How workers report progress."""
        return ProgressSettings(self.progress_interval_s, self.expected_images, self.control_dir)

    def prompt_for(self, row_prompt: str | None, context: str | None = None, *,
                   video: bool = False) -> str | None:
        """The prompt to send for an image whose manifest row has `row_prompt` (None: default;
        for a video, --video-prompt), with the image's `context` line (context_for) after it."""
        prompt = None
        if row_prompt is not None or video:
            base = row_prompt if row_prompt is not None else self.video_prompt
            prompt = base + (self.structured.prompt_suffix() if self.structured else "")
        if context:
            return f"{prompt or self.request.prompt}\n{context}"
        return prompt

    def context_for(self, meta: PhotoMeta | None, *, video: bool = False) -> str | None:
        """The context line of an image with these capture facts (None without --context)."""
        if self.context != "exif":
            return None
        return context_line(meta, location=self.prepare.location, video=video)

    def request_key(self, image_id: str, row_prompt: str | None = None,
                    media_type: str = "image") -> str:
        """The one request_key derivation: the image's sha256 plus everything that shapes the
        answer (model, prompt, generation and preparation settings)."""
        video = media_type == "video"
        params = {**self.request.key_params(self.prompt_for(row_prompt, video=video)),
                  "max_side": self.prepare.max_side, "jpeg_quality": self.prepare.jpeg_quality}
        if video:  # absent for photos: earlier answers keep their keys
            params["video_frames"] = self.prepare.video_frames
        if self.context != "none":  # absent otherwise: earlier answers keep their keys
            params.update(context=self.context, location=self.prepare.location)
        if self.endpoint.provider != DEFAULT_PROVIDER:
            # Another API is another answer, even for the same model name (a gateway's claude-*
            # and Anthropic's differ in request and billing). The base URL is not part of the
            # key (a moved gateway or proxy gives the same answers), so the provider must be;
            # left out for OpenAI so that the keys of earlier outputs stay valid for --resume.
            params["provider"] = self.endpoint.provider
        return request_key(image_id, params)

    def source_key(self, uri: str, version: str | None,
                   row_prompt: str | None = None) -> str | None:
        """The request_key of a listed file's version (its uri, size and time, not its bytes):
        what lets a resumed run skip an unchanged file without reading it. None when the
        version is unknown (URLs, manifests without sizes and times)."""
        if version is None:
            return None
        return self.request_key(f"listed:{uri}\n{version}", row_prompt, media_type_of(uri))

    def image_request(self, image: PreparedImage) -> ImageRequest:
        """What one prepared image (or video) is sent as: prompt, images, key and estimate."""
        video = image.media_type == "video"
        context = self.context_for(image.meta, video=video)
        frames = len(image.frames) if video else 0
        return ImageRequest(
            prompt=self.prompt_for(image.prompt, context, video=video),
            images=image.frames if video else image.jpeg,
            key=self.request_key(image.image_id, image.prompt, image.media_type),
            estimated_prompt_tokens=self.estimated_prompt_tokens(
                (image.sent_width, image.sent_height), image.prompt, context, frames=frames))

    def estimated_prompt_tokens(self, sent_size: tuple[int, int],
                                row_prompt: str | None = None,
                                context: str | None = None, *, frames: int = 0) -> int:
        """Prompt tokens one image's request should cost, by the published rules (`frames`: a
        video's, each of `sent_size`)."""
        req = self.request
        prompt = self.prompt_for(row_prompt, context, video=frames > 0)
        texts = [t for t in (req.system_prompt, prompt or req.prompt) if t]
        rule = self.price.image_tokens if self.price else None
        return tokens.chat_prompt_tokens(rule, texts, len(texts), [sent_size] * max(1, frames),
                                         req.detail)

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
                       max_cost_usd=self.max_cost_usd, provider=self.endpoint.provider)

    @classmethod
    def create(cls, *, model: str | None = None, prompt: str = DEFAULT_PROMPT,
               base_url: str | None = None, output: str | None = None,
               max_side: int = 512, max_output_tokens: int = 60, concurrency: int = 0,
               rpm: float = 0.0, tpm: float = 0.0, workers: int = 1,
               max_cost_usd: float | None = None, api_key_env: str = "OPENAI_API_KEY",
               api_key_secret: str | None = None, prices: str | None = None,
               price_as: str | None = None, run_id: str | None = None,
               provider: str = DEFAULT_PROVIDER, **request: Any) -> CaptionConfig:
        """A CaptionConfig for composing CaptionImages into your own pipeline.

        `base_url` defaults to $OPENAI_BASE_URL, else OpenAI; the key is read on the workers from
        `api_key_env` (or Secret Manager: `api_key_secret`). With `output`, each worker process
        journals the answers it paid for under OUTPUT/_journal/<run_id>/ (WriteCaptions deletes
        it once the Parquet files are written). `workers` is how many processes share `rpm`,
        `tpm` and `max_cost_usd`; `concurrency` 0 sizes the in-flight window from measurements
        (engine/window.py), a number fixes it. `price_as` bills `model` at a known model's price
        (an Azure deployment, a gateway alias). `provider` (openai, anthropic, gemini) is the
        API spoken; its own key variable (ANTHROPIC_API_KEY, GEMINI_API_KEY), base URL and
        model (gpt-5.4-nano, claude-haiku-4-5, gemini-2.5-flash-lite) are the defaults when
        `api_key_env`/`base_url`/`model` are not given. Further RequestSettings
        fields (system_prompt, detail, temperature, token_param, response_format) pass
        through `request`.
        """
        adapter = get_provider(provider)
        model = model or adapter.default_model
        if provider != DEFAULT_PROVIDER and api_key_env == "OPENAI_API_KEY":
            api_key_env = adapter.key_env
        price = lookup_price(load_prices(prices), model, price_as=price_as)
        if max_cost_usd and price is None:
            raise ConfigError(f"max_cost_usd needs a price for {model}: pass price_as=MODEL or "
                              "prices=FILE")
        run_id = run_id or new_run_id()
        output = output.rstrip("/") if output else None
        settings = RequestSettings(model=model, prompt=prompt,
                                   max_output_tokens=max_output_tokens, **request)
        adapter.check_settings(settings)
        return cls(request=settings,
                   endpoint=EndpointConfig(base_url=resolve_base_url(base_url, provider),
                                           api_key_env=api_key_env, provider=provider,
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
    # A phone library's sidecars, videos and Live Photo motion parts (inputs/library.py).
    library: LibrarySettings = field(default_factory=LibrarySettings)
    near: NearSettings | None = None  # --near-dedupe (pipeline/near_dedupe.py); None: off


def new_run_id() -> str:
    """A sortable, unique id for one run: UTC time plus a short random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
