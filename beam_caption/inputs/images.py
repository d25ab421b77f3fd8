"""Image preparation: decode, orient, shrink and re-encode one image as a JPEG for a vision model.

Everything here is pure CPU on bytes already read (see fetch.py for reading): no I/O, so it is
unit-tested on in-memory bytes and runs unchanged on any Beam worker. Every failure is an
ImageError carrying a small, stable code; the DoFn turns it into an errors row.

Speed matters at archive scale (DESIGN.md, "Facts worth knowing"): a 12 MP JPEG costs ~200 ms
decoded at full size but ~40 ms when libjpeg decodes it at 1/2, 1/4 or 1/8 scale (draft mode).
So the order is: read the header, ask for a draft at the aspect-correct target size, decode,
Image.reduce() by the integer part of the remaining shrink, resample the rest, and only then
apply the EXIF orientation to the small image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from beam_caption.errors import BeamCaptionError

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations that swap width and height.
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# Image.reduce() by whole factors while the remainder stays at least this many times the target,
# then a bicubic resample for the rest: the same trade-off as Image.thumbnail's reducing_gap.
_REDUCING_GAP = 2.0
# Modes that Image.resize handles directly; the rest are converted before shrinking.
_RESIZABLE_MODES = frozenset({"RGB", "L", "RGBA", "LA", "CMYK"})
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

# Pillow's own bomb guard is a process-wide global. We never lower or disable it; a call whose
# cap is above it raises it only for the duration of that call, under this lock, and restores it.
# Calls at or below it never touch the global (no lock, nothing leaks).
_PIXEL_CAP_LOCK = threading.Lock()


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


def prepare_image(
    uri: str,
    data: bytes,
    settings: PrepareSettings,
    *,
    source_id: str | None = None,
    prompt: str | None = None,
) -> PreparedImage:
    """Decode `data`, orient it upright, shrink it to `settings.max_side` and encode a JPEG.

    `width`/`height` are the original size as displayed (after EXIF orientation). Raises
    ImageError: empty_file (stage read), unsupported_format, decode_error, too_many_pixels.
    """
    if not data:
        raise ImageError("empty_file", "the file is empty", stage="read")
    image_id = hashlib.sha256(data).hexdigest()
    with _pixel_cap(settings.max_pixels):
        im = _open(data)
        _check_pixels(im.size, settings.max_pixels)
        source_format = im.format or "unknown"
        stored_size = im.size  # draft() below changes im.size to the decoded scale
        passthrough = settings.max_side == 0 and _is_plain_upright_jpeg(im)
        small, orientation = _decode_shrunk(im, settings.max_side, verify_only=passthrough)
    width, height = _oriented(stored_size, orientation)
    if passthrough:
        # Proven decodable (at 1/8 scale) and already what a model accepts: send the original.
        jpeg, sent_width, sent_height = data, width, height
    else:
        with _decode_errors():
            upright = _to_jpeg_mode(small)
            if orientation in _TRANSPOSE:
                # Rotating after the shrink: exif_transpose() first would force a full-size decode.
                upright = upright.transpose(_TRANSPOSE[orientation])
            jpeg = _encode_jpeg(upright, settings.jpeg_quality)
        sent_width, sent_height = upright.size
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
    )


def image_size_from_header(data: bytes) -> tuple[int, int]:
    """The displayed (EXIF-oriented) width and height, read from the header without decoding.

    Raises ImageError like prepare_image (empty_file, unsupported_format, decode_error,
    too_many_pixels above twice Pillow's default cap).
    """
    if not data:
        raise ImageError("empty_file", "the file is empty", stage="read")
    im = _open(data)
    # Image.Image.getexif reads only what the header gave us; PngImageFile.getexif would decode
    # the whole image to look for an eXIf chunk after the pixel data.
    return _oriented(im.size, _orientation_from(Image.Image.getexif, im))


@contextlib.contextmanager
def _pixel_cap(max_pixels: int) -> Iterator[None]:
    """Let Pillow open and decode images of up to `max_pixels` for the duration of one call."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or max_pixels <= current:
        yield  # our own header check (_check_pixels) is the stricter one
        return
    with _PIXEL_CAP_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


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
        raise ImageError("decode_error", f"cannot read image header: {_short(exc)}") from exc


def _bomb_error(exc: Exception) -> ImageError:
    """too_many_pixels for Pillow's decompression-bomb guard (above twice its cap)."""
    return ImageError("too_many_pixels", f"image too large to decode safely: {_short(exc)}")


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


def _is_plain_upright_jpeg(im: Image.Image) -> bool:
    """A JPEG a model accepts as is: RGB or grayscale (not CMYK) and no EXIF rotation.

    A JPEG's EXIF block sits in its header, so the orientation is known before decoding.
    """
    return (
        im.format == "JPEG"
        and im.mode in ("RGB", "L")
        and _orientation_from(Image.Image.getexif, im) == 1
    )


def _decode_shrunk(
    im: Image.Image, max_side: int, *, verify_only: bool = False
) -> tuple[Image.Image, int]:
    """Decode `im` shrunk to fit `max_side` (0 = full size); return it and its EXIF orientation.

    verify_only: the caller sends the original bytes and decodes only to prove the file is
    whole, so a 1/8-scale decode is enough. The orientation is read after load() because some
    formats (PNG) only know it then; the shrink does not depend on it since max_side bounds the
    longer side either way.
    """
    width, height = im.size
    target = sent_size(width, height, max_side)
    eighth = max(1, max(width, height) // 8)
    draft_size = sent_size(width, height, eighth) if verify_only else target
    with _decode_errors():
        # JPEG only (a no-op elsewhere): libjpeg decodes at the smallest 1/2, 1/4 or 1/8 scale
        # still covering the size in both dimensions, so it must keep the aspect ratio.
        im.draft("RGB", draft_size)
        im.load()
        orientation = _orientation_from(type(im).getexif, im)
        if im.mode not in _RESIZABLE_MODES:
            im = _to_jpeg_mode(im)
        if max_side and im.size != target:
            im = _shrink(im, target)
    return im, orientation


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
        raise ImageError("decode_error", f"cannot decode image: {_short(exc)}") from exc


def sent_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size an image of (width, height) is sent at with --max-side `max_side` (0 = original):
    the longer side becomes max_side, each side rounded, never enlarged, never below 1 px.

    The one fit rule: prepare_image shrinks to it and `beam-caption estimate` counts tokens for
    it. It does not depend on which side is which, so the stored or the displayed (EXIF-oriented)
    size give the same token count.
    """
    longer = max(width, height)
    if not max_side or longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrink(im: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Image.reduce() for the integer part of the shrink, then a resample to `target`.

    After reduce() (or JPEG draft) what is left is a shrink of less than 2x, where bilinear
    filtering looks the same to a vision model as bicubic and costs about a quarter less CPU
    (measured: 640x480 -> 512 px 10.5 -> 8.1 ms); a larger rest keeps bicubic.
    """
    factor = int(min(im.width / target[0], im.height / target[1]) / _REDUCING_GAP)
    if factor >= 2:
        im = im.reduce(factor)
    if im.size != target:
        rest = min(im.width / target[0], im.height / target[1])
        filter_ = Image.Resampling.BILINEAR if rest < 2 else Image.Resampling.BICUBIC
        im = im.resize(target, filter_)
    return im


def _orientation_from(getexif: Callable[[Image.Image], Image.Exif], im: Image.Image) -> int:
    """The EXIF orientation (1-8) using the given getexif function; 1 when absent or malformed."""
    try:
        value = getexif(im).get(_ORIENTATION_TAG, 1)
        value = int(value)
    except Exception:  # a malformed EXIF block must not fail a decodable image
        return 1
    return value if value in _TRANSPOSE else 1


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) as displayed after applying the EXIF orientation."""
    return (size[1], size[0]) if orientation in _SWAPS_AXES else size


def _to_jpeg_mode(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB or L, flattening transparency on white."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        return _flatten(im) if has_alpha else im
    if mode in ("RGBA", "LA", "La", "RGBa"):
        return _flatten(im)
    if mode.startswith("I") or mode == "F":
        return _to_8bit_gray(im)
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _flatten(im: Image.Image) -> Image.Image:
    """Composite an image with alpha onto white (what a viewer shows on a light page)."""
    rgba = im.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float grayscale into 0..255 (convert('L') would just clip)."""
    if im.mode != "F":
        im = im.convert("I")
    low, high = im.getextrema()
    if low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif im.mode == "I" and low >= 0 and high <= 65535:
        scale, offset = 1 / 257, 0.0  # 16-bit range: 65535 -> 255
    else:
        span = (high - low) or 1
        scale, offset = 255 / span, -low * 255 / span
    return im.point(lambda v: v * scale + offset).convert("L")


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """Encode RGB or L as a baseline JPEG with no metadata (orientation is already applied)."""
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _short(exc: BaseException) -> str:
    """A one-line, bounded description of a decoder exception for an errors row."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
