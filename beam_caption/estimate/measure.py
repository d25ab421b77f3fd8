"""What each worker of the estimate measures: an image's size from its header, then its prompt
tokens for every image-token rule of the price table and every --max-side variant.

Only what is needed to know an image's size is read (a header prefix via Beam FileSystems, or the
guarded fetcher for https:// URLs); no pixel is decoded and no model is called. Each image's prompt
tokens are computed with cost/tokens.py's `chat_prompt_tokens` exactly as the run's
`CaptionConfig.estimated_prompt_tokens` (config.py) does, for the size the image will be *sent*
at (`sent_size`, the shrink `prepare_image` applies). The simulator bills by the same rules, so
the estimated input tokens equal the simulated bill's. estimate/pipeline.py runs `measure` in Beam.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_caption.config import CaptionConfig
from beam_caption.cost import tokens
from beam_caption.cost.pricing import ModelPrice
from beam_caption.inputs.fetch import FetchSettings, is_url, read_image_bytes, read_uri_bytes
from beam_caption.inputs.files import open_uri
from beam_caption.inputs.images import (
    ImageError,
    ImageHeader,
    header_meta,
    image_header,
    sent_size,
)
from beam_caption.inputs.kinds import VIDEO, kind_of
from beam_caption.inputs.metadata import PhotoMeta
from beam_caption.inputs.similar import seconds_of
from beam_caption.inputs.sources import ImageRef
from beam_caption.inputs.video import video_header

# JPEG headers (EXIF with its thumbnail, ICC profile) almost always fit in the first 256 KiB; when
# they do not, or a TIFF keeps its directory at the end, the whole file is read instead.
HEADER_PREFIX_BYTES = 256 * 1024
# The image rule of a model the price table does not know (as tokens.chat_prompt_tokens assumes).
FALLBACK_RULE_KEY = "fallback"


def rule_key(rule: Mapping[str, Any] | None) -> str:
    """A stable name for an image-token rule (canonical JSON); FALLBACK_RULE_KEY for none."""
    if not rule:
        return FALLBACK_RULE_KEY
    return json.dumps(dict(rule), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TokenSpec:
    """What the workers need to turn an image size into prompt tokens (picklable).

    `caption` is the run's own CaptionConfig (built by config.build_run_config from the same
    flags), so the prompt, the structured-output suffix, the system prompt and the detail are
    exactly what the run would send.
    """

    caption: CaptionConfig
    rules: tuple[tuple[str, dict[str, Any] | None], ...]  # (rule_key, rule), distinct keys
    max_sides: tuple[int, ...]
    fetch: FetchSettings = field(default_factory=FetchSettings)
    max_pixels: int = 89_478_485
    near: bool = False  # --near-dedupe: read each photo's camera and capture time too
    near_seconds: float = 10.0

    def keys(self) -> list[tuple[str, int]]:
        """The (rule_key, max_side) pairs every image is measured for, in a fixed order."""
        return [(key, side) for key, _ in self.rules for side in self.max_sides]

    def texts(self, row_prompt: str | None, *, video: bool = False,
              context: str | None = None) -> list[str]:
        """The texts of one request, as CaptionConfig.estimated_prompt_tokens lists them."""
        req = self.caption.request
        prompt = self.caption.prompt_for(row_prompt, context, video=video)
        return [t for t in (req.system_prompt, prompt or req.prompt) if t]


def token_spec(prices: Mapping[str, ModelPrice], caption: CaptionConfig, *,
               max_sides: Iterable[int], fetch: FetchSettings | None = None,
               max_pixels: int = 89_478_485, near: bool = False,
               near_seconds: float = 10.0) -> TokenSpec:
    """A TokenSpec covering every image rule in `prices` plus the fallback rule."""
    rules: dict[str, dict[str, Any] | None] = {FALLBACK_RULE_KEY: None}
    for price in prices.values():
        rules.setdefault(rule_key(price.image_tokens), price.image_tokens or None)
    return TokenSpec(caption=caption, rules=tuple(sorted(rules.items())),
                     max_sides=tuple(sorted(set(max_sides))), fetch=fetch or FetchSettings(),
                     max_pixels=max_pixels, near=near, near_seconds=near_seconds)


def read_header_size(uri: str, fetch: FetchSettings, max_pixels: int) -> ImageHeader:
    """The displayed size and kind of the image at `uri`, from its header; raises ImageError
    with a code (see read_header)."""
    return read_header(uri, fetch, max_pixels)[0]


def read_header(uri: str, fetch: FetchSettings, max_pixels: int) -> tuple[ImageHeader, bytes]:
    """(the header of the image at `uri`, the bytes read for it); raises ImageError with a code.

    Local, gs:// and s3:// files: only a prefix is read (the whole file if the header does not
    fit). https:// URLs are fetched whole by the guarded fetcher (no range requests). Files the
    run would refuse (too_large, too_many_pixels) get the same codes here. The bytes serve
    read_meta too, so an image is read once.
    """
    if is_url(uri):
        head = read_image_bytes(uri, fetch)
        header = image_header(head, uri)
    else:
        head, size = _read_prefix(uri, fetch)
        if size is not None and size > fetch.max_bytes:
            raise ImageError("too_large", f"file is larger than {fetch.max_bytes} bytes",
                             stage="read")
        try:
            header = image_header(head, uri)
        except ImageError as exc:
            if exc.code != "decode_error" or len(head) < HEADER_PREFIX_BYTES:
                raise  # the prefix was the whole file: the error is real
            head = read_uri_bytes(uri, max_bytes=fetch.max_bytes)
            header = image_header(head, uri)
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise ImageError("too_many_pixels", f"image has {width * height} pixels ({width}x"
                         f"{height}), above the cap of {max_pixels}")
    return header, head


def _read_prefix(uri: str, fetch: FetchSettings) -> tuple[bytes, int | None]:
    """The first HEADER_PREFIX_BYTES of a FileSystems file and its size (None if unknown)."""
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            head = handle.read(HEADER_PREFIX_BYTES)
            if len(head) < HEADER_PREFIX_BYTES:
                return head, len(head)
            return head, _size_of(handle)
    except Exception:  # classified below
        # read_uri_bytes maps every filesystem failure to a read code (not_found, ...); it fails
        # the same way, so the second attempt only happens for files that cannot be read.
        return read_uri_bytes(uri, max_bytes=fetch.max_bytes), None


def _size_of(handle: Any) -> int | None:
    """The size of an open FileSystems file, by seeking to its end (no extra read)."""
    try:
        handle.seek(0, os.SEEK_END)
        return int(handle.tell())
    except Exception:  # not every filesystem's reader can seek
        return None


@dataclass(frozen=True)
class Measured:
    """One input's result: its prompt tokens per TokenSpec.keys(), or the code it failed with."""

    uri: str
    code: str | None = None
    text_tokens: int = 0
    prompt_tokens: tuple[int, ...] = ()
    video_frames: int = 0  # a video: the keyframes its request sends
    camera: str | None = None  # with TokenSpec.near: camera and prompt, near-dedupe's groups
    taken_s: float | None = None


def measure(ref: ImageRef, spec: TokenSpec) -> Measured:
    """Read `ref`'s size and compute its prompt tokens for every rule and --max-side variant."""
    if ref.problem is not None:
        return Measured(ref.uri, code=ref.problem_code)
    video = kind_of(ref.uri) == VIDEO
    frames = spec.caption.prepare.video_frames if video else 1
    meta = None
    try:
        if video:
            header, meta = read_video_size(ref.uri, spec.fetch)
        else:
            header, head = read_header(ref.uri, spec.fetch, spec.max_pixels)
            if spec.near or spec.caption.context != "none":
                meta = read_meta(ref.uri, spec.fetch, head)
    except ImageError as exc:
        return Measured(ref.uri, code=exc.code)
    if meta is not None:  # as prepare_image and prepare_video complete and trim it
        meta = meta.filled_from(ref.meta)
        meta = meta if spec.caption.prepare.location else meta.without_location()
    # --context exif: the very line the run adds to this image's prompt.
    texts = spec.texts(ref.prompt, video=video,
                       context=spec.caption.context_for(meta, video=video))
    # Exactly CaptionConfig.estimated_prompt_tokens, at the size the image would be sent; the
    # loop order is the order of spec.keys().
    detail = spec.caption.request.detail
    counts = tuple(tokens.chat_prompt_tokens(rule, texts, len(texts),
                                             [sent_size(header.width, header.height, side,
                                                        jpeg=header.jpeg)] * frames, detail)
                   for _, rule in spec.rules for side in spec.max_sides)
    return Measured(ref.uri, text_tokens=tokens.messages_text_tokens(texts, len(texts)),
                    prompt_tokens=counts, video_frames=frames if video else 0,
                    # The run's near-dedupe groups by camera, minute and prompt (one question).
                    camera=(f"{meta.camera_make or ''}|{meta.camera_model or ''}|{ref.prompt or ''}"
                            if spec.near and meta and not video else None),
                    taken_s=(seconds_of(meta.taken_at)
                             if spec.near and meta and not video else None))


def read_video_size(uri: str, fetch: FetchSettings) -> tuple[ImageHeader, PhotoMeta]:
    """A video's frame size and capture facts from its container (PyAV reads the header,
    seeking as needed; the run sends each keyframe at the fit rule's size, as a photo of that
    size)."""
    if is_url(uri):
        found = video_header(read_image_bytes(uri, fetch))
    else:
        with open_uri(uri) as handle:
            found = video_header(handle)
    return ImageHeader(found.width, found.height, False), found.meta


def read_meta(uri: str, fetch: FetchSettings, head: bytes) -> PhotoMeta:
    """A photo's EXIF facts for --context's line and --near-dedupe's range, from `head` (the
    bytes read_header read); the whole file only when the EXIF lies past them (a large HEIC)."""
    try:
        return header_meta(head)
    except ImageError:
        return header_meta(read_image_bytes(uri, fetch) if is_url(uri)
                           else read_uri_bytes(uri, max_bytes=fetch.max_bytes))
