"""The one fit rule: the size an image is sent at for --max-side, DCT scaling included.

prepare_image shrinks to it and `beam-caption estimate` counts tokens for it (both through
inputs/images.py, which re-exports it).
"""

from __future__ import annotations

# libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 scale for little more than the entropy decode
# (DCT scaling). Such a decode is sent as it comes, with no resample, when its long side is at
# least this share of --max-side: a few pixels under the maximum are fewer patches, so fewer
# tokens, and the photo looks the same to a model. Below it, the next larger scale is decoded
# and resampled to --max-side (a 1600x1200 photo is not sent at 400x300).
DCT_SLACK = 0.9
_DCT_SCALES = (2, 4, 8)


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
