"""Image inputs: decode data URLs strictly, identify the image and extract the facts a caption uses.

The real API accepts PNG, JPEG, WEBP and non-animated GIF, sent as base64 data URLs or fetched
from http(s) URLs. Anything it would reject is rejected here with the same 400 codes. Analysis is
kept cheap (JPEG draft decoding, a 8x8 box-filtered thumbnail) so the simulator is never what
limits a benchmark.
"""

from __future__ import annotations

import binascii
import colorsys
import functools
import hashlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from beam_caption.simulator.apierror import SimError, bad_request

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
ACCEPTED_MIME = ("image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif")
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the per-image limit of the vision guide
THUMB = 8  # the colour analysis looks at an 8x8 box-filtered thumbnail (64 pixels)
_QUANTISE = [(v & 0xF0) | 0x08 for v in range(256)] * 3  # 4 bits per channel, bucket centres


@dataclass(frozen=True)
class ImageFacts:
    """What the simulator knows about one image: identity, size and the caption's raw material."""

    sha256: str  # of the image bytes as received (decoded data URL or fetched body)
    width: int
    height: int
    format: str  # PIL format name: PNG, JPEG, WEBP or GIF
    brightness: float  # mean of luma and HSV value, 0 (black) .. 1 (white)
    colours: tuple[str, ...]  # colour names, most frequent first, covering >= 80% of pixels


def decode_data_url(url: str, param: str) -> bytes:
    """The image bytes of a `data:image/...;base64,...` URL; 400 as the API answers otherwise."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise bad_request("Invalid image URL: expected a base64 data URL "
                          "('data:image/jpeg;base64,...').", param, "invalid_image_url")
    mime = header[len("data:"):-len(";base64")].lower()
    if mime not in ACCEPTED_MIME:
        raise _unsupported(param)
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise _too_large(param)
    try:
        # strict_mode: no whitespace, no missing padding, no stray characters (the API is strict).
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise bad_request("Invalid base64 image_url: the data URL's payload is not valid "
                          "base64.", param, "invalid_base64") from None


def analyse(data: bytes, param: str) -> ImageFacts:
    """Decode `data` with Pillow and extract its facts; 400 invalid_image_format if unusable."""
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_large(param)
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
                if fmt not in ACCEPTED_FORMATS or getattr(im, "is_animated", False):
                    raise _unsupported(param)
                width, height = im.size
                thumb = _thumbnail(im)
    except SimError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _unsupported(param) from None
    brightness, colours = _colour_facts(thumb)
    return ImageFacts(digest, width, height, fmt, brightness, colours)


def _thumbnail(im: Image.Image) -> Image.Image:
    """An RGB THUMB x THUMB box-filtered copy; decodes the whole image (truncation shows here)."""
    if im.format == "JPEG":
        # Decode at the smallest DCT scale that still covers the thumbnail: up to 8x cheaper.
        im.draft("RGB", (THUMB * 4, THUMB * 4))
    im.load()
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if "A" in im.mode or im.mode == "P" \
            else im.convert("RGB")
    factor = min(im.width, im.height) // (THUMB * 4)
    if factor > 1:
        im = im.reduce(factor)  # integer box shrink: ~10x cheaper than a resampling resize
    return im.resize((THUMB, THUMB), Image.Resampling.BOX)


def _colour_facts(thumb: Image.Image) -> tuple[float, tuple[str, ...]]:
    # Quantise to 4 bits per channel first: getcolors() then returns few distinct colours, and
    # their names come from a small cache instead of 64 HSV conversions per image.
    quantised = thumb.point(_QUANTISE)
    colours = quantised.getcolors(THUMB * THUMB) or []
    total = THUMB * THUMB
    # Brightness: the mean of luma and HSV value, so a saturated blue sky reads as bright
    # (luma alone calls it dark) while black stays 0 and white 1.
    luma = sum(n * (0.299 * r + 0.587 * g + 0.114 * b + max(r, g, b)) / 2
               for n, (r, g, b) in colours) / (255 * total)
    counts: Counter[str] = Counter()
    for n, rgb in colours:
        counts[colour_name(*rgb)] += n
    names, covered = [], 0
    for name, count in counts.most_common():
        names.append(name)
        covered += count
        if covered >= 0.8 * total or len(names) == 3:
            break
    return round(luma, 3), tuple(names)


@functools.lru_cache(maxsize=4096)
def colour_name(r: int, g: int, b: int) -> str:
    """A plain-English name for an sRGB colour (black, gray, white, brown or one of 8 hues)."""
    h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
    if v < 0.18:
        return "black"
    if s < 0.18 or (s < 0.3 and v < 0.35):
        return "white" if v > 0.82 else "gray"
    hue = h * 360
    if v < 0.55 and 15 <= hue < 50:
        return "brown"
    for limit, name in ((15, "red"), (40, "orange"), (70, "yellow"), (165, "green"),
                        (200, "teal"), (255, "blue"), (290, "purple"), (335, "pink")):
        if hue < limit:
            return name
    return "red"


def _unsupported(param: str) -> SimError:
    return bad_request("You uploaded an unsupported image. Please make sure your image is "
                       "valid and has one of the following formats: ['png', 'jpeg', 'gif', "
                       "'webp'].", param, "invalid_image_format")


def _too_large(param: str) -> SimError:
    return bad_request("Image is too large: the limit is 20 MB per image.", param,
                       "image_too_large")
