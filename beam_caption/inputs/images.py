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
from beam_caption.inputs.pixels import (
    decode_shrunk,
    encode_upright,
    header_orientation,
    is_plain_upright_jpeg,
    oriented,
    pixel_cap,
)

# Containers Pillow recognises nowhere by default: say "unsupported", not "broken".
_UNSUPPORTED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypmsf1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG/XML"),
)
# libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 scale for little more than the entropy decode
# (DCT scaling). Such a decode is sent as it comes, with no resample, when its long side is at
# least this share of --max-side: a few pixels under the maximum are fewer patches, so fewer
# tokens, and the photo looks the same to a model. Below it, the next larger scale is decoded
# and resampled to --max-side (a 1600x1200 photo is not sent at 400x300).
DCT_SLACK = 0.9
_DCT_SCALES = (2, 4, 8)
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


def prepare_image(
    uri: str,
    data: bytes,
    settings: PrepareSettings,
    *,
    source_id: str | None = None,
    prompt: str | None = None,
    version: str | None = None,
) -> PreparedImage:
    """Decode `data`, orient it upright, shrink it to `settings.max_side` and encode a JPEG.

    `width`/`height` are the original size as displayed (after EXIF orientation). Raises
    ImageError: empty_file (stage read), unsupported_format, decode_error, too_many_pixels.
    """
    if not data:
        raise ImageError("empty_file", "the file is empty", stage="read")
    image_id = hashlib.sha256(data).hexdigest()
    with pixel_cap(settings.max_pixels):
        im = _open(data)
        _check_pixels(im.size, settings.max_pixels)
        source_format = im.format or "unknown"
        stored_size = im.size  # the draft decode changes im.size to the decoded scale
        passthrough = settings.max_side == 0 and is_plain_upright_jpeg(im)
        small, orientation = _decode(im, settings.max_side, verify_only=passthrough)
    width, height = oriented(stored_size, orientation)
    if passthrough:
        # Proven decodable (at 1/8 scale) and already what a model accepts: send the original.
        jpeg, sent_width, sent_height = data, width, height
    else:
        with _decode_errors():
            jpeg, sent_width, sent_height = encode_upright(
                small, orientation, settings.jpeg_quality
            )
    return PreparedImage(
        uri=uri,
        image_id=image_id,
        jpeg=jpeg,
        width=width,
        height=height,
        sent_width=sent_width,
        sent_height=sent_height,
        bytes=len(data),
        source_format=source_format,
        source_id=source_id,
        prompt=prompt,
        version=version,
    )


class ImageHeader(NamedTuple):
    """What an image's header says: its displayed (EXIF-oriented) size and whether it is a
    JPEG (which is decoded at a DCT scale, see sent_size)."""

    width: int
    height: int
    jpeg: bool


def image_header(data: bytes) -> ImageHeader:
    """The displayed size and kind of an image, read from its header without decoding.

    Raises ImageError like prepare_image (empty_file, unsupported_format, decode_error,
    too_many_pixels above twice Pillow's default cap).
    """
    if not data:
        raise ImageError("empty_file", "the file is empty", stage="read")
    im = _open(data)
    width, height = oriented(im.size, header_orientation(im))
    return ImageHeader(width, height, im.format in DCT_FORMATS)


def dct_scale(width: int, height: int, max_side: int) -> int:
    """The DCT scale (2, 4 or 8) a JPEG of this size is decoded and sent at for `max_side`, or 1
    when no scale lands within DCT_SLACK of it (the JPEG is then resampled like any image)."""
    longer = max(width, height)
    if not max_side or longer <= max_side:
        return 1
    for scale in _DCT_SCALES:
        scaled = -(-longer // scale)  # libjpeg rounds a scaled side up
        if scaled <= max_side:
            return scale if scaled >= DCT_SLACK * max_side else 1
    return 1


def sent_size(width: int, height: int, max_side: int, *, jpeg: bool = False) -> tuple[int, int]:
    """The size an image of (width, height) is sent at with --max-side `max_side` (0 = original).

    A JPEG whose DCT-scaled decode lands within DCT_SLACK of max_side is sent at that decode's
    size (each side divided by the scale, rounded up). Otherwise the longer side becomes
    max_side, each side rounded, never enlarged, never below 1 px.

    The one fit rule: prepare_image shrinks to it and `beam-caption estimate` counts tokens for
    it. It does not depend on which side is which, so the stored or the displayed (EXIF-oriented)
    size give the same token count.
    """
    longer = max(width, height)
    if not max_side or longer <= max_side:
        return width, height
    scale = dct_scale(width, height, max_side) if jpeg else 1
    if scale > 1:
        return -(-width // scale), -(-height // scale)
    ratio = max_side / longer
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A one-line, bounded description of an exception for an errors row or a ConfigError:
    its first non-blank line cut to `limit` characters, or its type name when it has no text.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]


def _open(data: bytes) -> Image.Image:
    """Image.open on bytes (header only), with Pillow's failures mapped to ImageError codes."""
    try:
        # Pillow may warn (DecompressionBombWarning) between 1x and 2x its cap; such images
        # are above our cap too and rejected right after. The warning filters are process-global
        # and not thread-safe to change, so they are left alone.
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc) from exc
    except UnidentifiedImageError as exc:
        kind = _unsupported_kind(data)
        if kind:
            raise ImageError("unsupported_format", f"{kind} images are not supported") from exc
        raise ImageError("decode_error", "not an image format that can be decoded") from exc
    except Exception as exc:  # Pillow plugins raise many types on bad input
        raise ImageError("decode_error", f"cannot read image header: {first_line(exc)}") from exc


def _bomb_error(exc: Exception) -> ImageError:
    """too_many_pixels for Pillow's decompression-bomb guard (above twice its cap)."""
    return ImageError("too_many_pixels", f"image too large to decode safely: {first_line(exc)}")


def _unsupported_kind(data: bytes) -> str | None:
    """Name a well-formed container Pillow cannot decode (HEIC, PDF, ...), else None."""
    head = data[:64].lstrip()
    for offset, magic, name in _UNSUPPORTED_SIGNATURES:
        if head[offset : offset + len(magic)].lower() == magic.lower():
            return name
    return None


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
