"""Pixel work for one image: draft-mode decode, shrink, EXIF orientation, JPEG mode and encode.

The Pillow half of inputs/images.py's prepare_image: it works on an image Pillow has already
opened (header read, nothing decoded), does no I/O and maps no errors (inputs/images.py turns
whatever Pillow raises here into an ImageError). It also holds the scoped raise of Pillow's
process-wide decompression-bomb cap.

Speed matters at archive scale (DESIGN.md, "Facts worth knowing"): a 12 MP JPEG costs ~200 ms
decoded at full size but ~40 ms when libjpeg decodes it at 1/2, 1/4 or 1/8 scale (draft mode).
So the order is: ask for a draft at the aspect-correct target size, decode, Image.reduce() by
the integer part of the remaining shrink, resample the rest, and only then apply the EXIF
orientation to the small image.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator

from PIL import Image

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

# Pillow's own bomb guard is a process-wide global. We never lower or disable it; a call whose
# cap is above it raises it only for the duration of that call, under this lock, and restores it.
# Calls at or below it never touch the global (no lock, nothing leaks).
_PIXEL_CAP_LOCK = threading.Lock()


@contextlib.contextmanager
def pixel_cap(max_pixels: int) -> Iterator[None]:
    """Let Pillow open and decode images of up to `max_pixels` for the duration of one call."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or max_pixels <= current:
        yield  # the caller's own header check against max_pixels is the stricter one
        return
    with _PIXEL_CAP_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def decode_shrunk(
    im: Image.Image, draft_size: tuple[int, int], target: tuple[int, int] | None
) -> tuple[Image.Image, int]:
    """Decode `im` and shrink it to `target` (None: keep the decoded size); return it and its
    EXIF orientation.

    `draft_size` is what JPEG draft mode must still cover. The orientation is read after load()
    because some formats (PNG) only know it then; the shrink does not depend on it since the fit
    rule bounds the longer side either way. The result is in a mode Image.resize handles.
    """
    # JPEG only (a no-op elsewhere): libjpeg decodes at the smallest 1/2, 1/4 or 1/8 scale
    # still covering the size in both dimensions, so it must keep the aspect ratio.
    im.draft("RGB", draft_size)
    im.load()
    orientation = _orientation_from(type(im).getexif, im)
    if im.mode not in _RESIZABLE_MODES:
        im = _to_jpeg_mode(im)
    if target is not None and im.size != target:
        im = _shrink(im, target)
    return im, orientation


def encode_upright(im: Image.Image, orientation: int, quality: int) -> tuple[bytes, int, int]:
    """A decoded (already shrunk) image as an upright RGB or L JPEG: bytes, width, height."""
    upright = _to_jpeg_mode(im)
    if orientation in _TRANSPOSE:
        # Rotating after the shrink: exif_transpose() first would force a full-size decode.
        upright = upright.transpose(_TRANSPOSE[orientation])
    return _encode_jpeg(upright, quality), upright.width, upright.height


def header_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) an opened, not yet decoded image announces in its header."""
    # Image.Image.getexif reads only what the header gave us; PngImageFile.getexif would decode
    # the whole image to look for an eXIf chunk after the pixel data.
    return _orientation_from(Image.Image.getexif, im)


def is_plain_upright_jpeg(im: Image.Image) -> bool:
    """A JPEG a model accepts as is: RGB or grayscale (not CMYK) and no EXIF rotation.

    A JPEG's EXIF block sits in its header, so the orientation is known before decoding.
    """
    return im.format == "JPEG" and im.mode in ("RGB", "L") and header_orientation(im) == 1


def oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) as displayed after applying the EXIF orientation."""
    return (size[1], size[0]) if orientation in _SWAPS_AXES else size


def _shrink(im: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Image.reduce() for the integer part of the shrink, then a resample to `target`.

    After reduce() (or JPEG draft) what is left is a shrink of less than 2x, where averaging
    each output pixel's area (BOX) looks the same to a vision model as bicubic and costs less
    than half (measured on 800x600 -> 512x384: bicubic 4.0, bilinear 2.4, box 1.6 ms); a larger
    rest keeps bicubic.
    """
    factor = int(min(im.width / target[0], im.height / target[1]) / _REDUCING_GAP)
    if factor >= 2:
        im = im.reduce(factor)
    if im.size != target:
        rest = min(im.width / target[0], im.height / target[1])
        filter_ = Image.Resampling.BOX if rest < 2 else Image.Resampling.BICUBIC
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
