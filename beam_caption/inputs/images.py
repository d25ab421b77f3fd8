"""Image preparation: one image's bytes -> a JPEG a vision model accepts, or an ImageError.

The public API for the pipeline, the gallery and `beam-caption estimate`: prepare_image,
image_header and sent_size (the one fit rule), plus ImageError and the settings and
result types. It opens the header, enforces the pixel cap and maps every Pillow failure to an
ImageError carrying a small, stable code (the DoFn turns it into an errors row); the decode,
shrink, orientation and encode themselves are in inputs/pixels.py.

Everything here is pure CPU on bytes already read (inputs/fetch.py and inputs/files.py read
them): no I/O, so it is unit-tested on in-memory bytes and runs unchanged on any Beam worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from beam_caption.errors import BeamCaptionError

# The fit rule lives in inputs/fit.py; callers keep importing it from here.
from beam_caption.inputs.fit import (
    DCT_SLACK,  # noqa: F401 (re-exported)
    dct_scale,
    sent_size,
)
from beam_caption.inputs.formats import (
    container_kind,
    container_meta,
    decodable,
    register_plugins,
    representative_frame,
)
from beam_caption.inputs.heif_boxes import heif_size
from beam_caption.inputs.metadata import PhotoMeta, exif_meta
from beam_caption.inputs.pixels import (
    decode_shrunk,
    encode_upright,
    header_orientation,
    is_plain_upright_jpeg,
    oriented,
    pixel_cap,
)

DCT_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: a JPEG with more pictures after the first


class ImageError(BeamCaptionError):
    """A read or decode failure of one image; `code` is a small stable set, `message` is safe.

    read stage: not_found, permission_denied, empty_file, read_error, download_failed,
    forbidden_address, too_large, timeout. decode stage: decode_error, too_many_pixels,
    unsupported_format.
    """

    def __init__(self, code: str, message: str, stage: str = "decode") -> None:
        super().__init__(message)
        self.code = code
        self.stage = stage
        self.message = message

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str, str]]:
        # Exceptions pickle with their args only; keep code and stage across Beam workers.
        return (type(self), (self.code, self.message, self.stage))


@dataclass(frozen=True)
class PrepareSettings:
    """How to prepare an image: longest side, JPEG quality and the decompression-bomb cap.

    max_side=0 sends the image at its own size; it is still re-encoded as JPEG unless it already
    is a JPEG in RGB or L with no EXIF rotation, in which case the original bytes are sent.
    """

    max_side: int = 512
    jpeg_quality: int = 85
    max_pixels: int = 89_478_485
    location: bool = True  # False (--no-location): GPS is dropped from what an image carries
    video_frames: int = 4  # keyframes sent for one video (inputs/video.py)

    def __post_init__(self) -> None:
        if self.max_side < 0:
            raise ValueError("max_side must be 0 (keep size) or a positive number of pixels")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be between 1 and 100")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be positive")


@dataclass(frozen=True)
class PreparedImage:
    """One image ready to send: the JPEG bytes plus what the output rows record about it."""

    uri: str
    image_id: str
    jpeg: bytes
    width: int
    height: int
    sent_width: int
    sent_height: int
    bytes: int
    source_format: str
    source_id: str | None = None
    prompt: str | None = None
    version: str | None = None  # the listed file version (ImageRef.version), if known
    meta: PhotoMeta | None = None  # capture time, camera, GPS (EXIF, then a sidecar)
    media_type: str = "image"
    frames: tuple[bytes, ...] = ()  # a video's keyframes as JPEGs, sent in one request
    duration_s: float | None = None
    frame_count: int | None = None
    frame_times_s: tuple[float, ...] = ()


def prepare_image(
    uri: str,
    data: bytes,
    settings: PrepareSettings,
    *,
    source_id: str | None = None,
    prompt: str | None = None,
    version: str | None = None,
    sidecar: PhotoMeta | None = None,
) -> PreparedImage:
    """Decode `data`, orient it upright, shrink it to `settings.max_side` and encode a JPEG.

    `width`/`height` are the original size as displayed (after EXIF orientation); for a camera
    RAW file, the size of the embedded preview that is sent (inputs/formats.py). `meta` is
    the header's EXIF, completed by `sidecar` (a Takeout JSON), without GPS unless
    `settings.location`. Raises
    ImageError: empty_file (stage read), unsupported_format, decode_error, too_many_pixels.
    """
    if not data:
        raise ImageError("empty_file", "the file is empty", stage="read")
    image_id = hashlib.sha256(data).hexdigest()
    with _decode_errors():  # a RAW file without a preview
        pixels, raw_orientation = decodable(uri, data)
    with pixel_cap(settings.max_pixels):
        im = _open(pixels)
        _check_pixels(im.size, settings.max_pixels)
        source_format = ("RAW" if pixels is not data else im.format) or "unknown"
        stored_size = im.size  # the draft decode changes im.size to the decoded scale
        meta = exif_meta(im).filled_from(sidecar)  # the header's, before any decode
        if pixels is not data:  # a RAW preview rarely has EXIF; its container does
            meta = container_meta(data).filled_from(meta)
        meta = meta if settings.location else meta.without_location()
        passthrough = settings.max_side == 0 and pixels is data and is_plain_upright_jpeg(im)
        small, orientation = _decode(im, settings.max_side, verify_only=passthrough)
    # A camera's preview JPEG rarely carries the orientation; the RAW container does.
    orientation = orientation if orientation != 1 else raw_orientation
    width, height = oriented(stored_size, orientation)
    if passthrough:
        # Proven decodable (at 1/8 scale) and already what a model accepts: send the original.
        jpeg, sent_width, sent_height = data, width, height
    else:
        with _decode_errors():
            jpeg, sent_width, sent_height = encode_upright(small, orientation,
                                                           settings.jpeg_quality)
    return PreparedImage(uri=uri, image_id=image_id, jpeg=jpeg, width=width, height=height,
                         sent_width=sent_width, sent_height=sent_height, bytes=len(data),
                         source_format=source_format, source_id=source_id, prompt=prompt,
                         version=version, meta=meta)


class ImageHeader(NamedTuple):
    """An image header's displayed size, and whether it is a JPEG (DCT-scaled: sent_size)."""

    width: int
    height: int
    jpeg: bool


def image_header(data: bytes, uri: str = "") -> ImageHeader:
    """The displayed size and kind of an image, read from its header without decoding.

    A HEIC is parsed, not decoded (pillow-heif opens lazily); a camera RAW file (named by
    `uri`) gives its embedded preview's size. Raises ImageError like prepare_image (empty_file,
    unsupported_format, decode_error, too_many_pixels above twice Pillow's default cap).
    """
    if not data:
        raise ImageError("empty_file", "the file is empty", stage="read")
    with _decode_errors():
        pixels, raw_orientation = decodable(uri, data)
    try:
        im = _open(pixels)
    except ImageError:
        # libheif needs the whole file; the boxes of a HEIF prefix already say its size.
        size = heif_size(pixels) if container_kind(pixels, True)[1] else None
        if size is None:
            raise
        return ImageHeader(size[0], size[1], False)
    orientation = header_orientation(im)
    width, height = oriented(im.size, orientation if orientation != 1 else raw_orientation)
    return ImageHeader(width, height, im.format in DCT_FORMATS)


def header_meta(data: bytes) -> PhotoMeta:
    """The EXIF facts in an image's header (nothing decoded); raises ImageError like
    image_header."""
    return exif_meta(_open(data))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A one-line, bounded description of an exception for an errors row or a ConfigError:
    its first non-blank line cut to `limit` characters, or its type name when it has no text.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]


def _open(data: bytes) -> Image.Image:
    """Image.open on bytes (header only), with Pillow's failures mapped to ImageError codes."""
    heif = register_plugins()
    try:
        # Pillow may warn (DecompressionBombWarning) between 1x and 2x its cap; such images
        # are above our cap too and rejected right after. The warning filters are process-global
        # and not thread-safe to change, so they are left alone.
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc) from exc
    except UnidentifiedImageError as exc:
        kind, readable = container_kind(data, heif)
        if kind and readable:
            # libheif refuses a truncated or damaged file at open; Pillow's AVIF plugin too.
            raise ImageError("decode_error", f"{kind} file is truncated or damaged") from exc
        if kind:
            raise ImageError("unsupported_format", f"{kind} images are not supported") from exc
        raise ImageError("decode_error", "not an image format that can be decoded") from exc
    except Exception as exc:  # Pillow plugins raise many types on bad input
        raise ImageError("decode_error", f"cannot read image header: {first_line(exc)}") from exc


def _bomb_error(exc: Exception) -> ImageError:
    """too_many_pixels for Pillow's decompression-bomb guard (above twice its cap)."""
    return ImageError("too_many_pixels", f"image too large to decode safely: {first_line(exc)}")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """too_many_pixels when the header announces more pixels than the configured cap."""
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"image has {pixels} pixels ({size[0]}x{size[1]}), above the cap of {max_pixels}",
        )


def _decode(
    im: Image.Image, max_side: int, *, verify_only: bool = False
) -> tuple[Image.Image, int]:
    """Decode `im` shrunk to fit `max_side` (0 = full size); return it and its EXIF orientation.

    verify_only: the caller sends the original bytes and decodes only to prove the file is
    whole, so a 1/8-scale decode is enough. A JPEG sent at a DCT scale is drafted at exactly
    that scale (no resample follows). Otherwise draft mode is asked for the target size itself,
    which keeps the aspect ratio libjpeg needs (see pixels.decode_shrunk).
    """
    representative_frame(im)  # an animation's middle frame; a no-op for still images
    width, height = im.size
    jpeg = im.format in DCT_FORMATS
    target = sent_size(width, height, max_side, jpeg=jpeg)
    scale = 8 if verify_only else (dct_scale(width, height, max_side) if jpeg else 1)
    # Pillow drafts at the largest scale s with size // draft_size >= s on both sides.
    draft_size = (max(1, width // scale), max(1, height // scale)) if scale > 1 else target
    with _decode_errors():
        return decode_shrunk(im, draft_size, target if max_side else None)


@contextlib.contextmanager
def _decode_errors() -> Iterator[None]:
    """Map whatever Pillow raises while decoding or converting to an ImageError."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc) from exc
    except Exception as exc:  # truncated data, bad CRC, zlib errors, odd modes, ...
        raise ImageError("decode_error", f"cannot decode image: {first_line(exc)}") from exc
