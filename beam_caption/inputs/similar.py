"""Near-duplicates (`--near-dedupe`): a burst of shots of one scene is captioned once.

Two photos are near-identical when (a) the same camera took them (make and model), (b) their
capture times are at most `seconds` apart, (c) the difference hashes of the thumbnails already
decoded for sending differ in at most `max_distance` of their 256 bits, and (d) their 8x8
colour thumbnails differ by at most `max_color` levels on average. All are required: a photo
with no capture time is never merged, and structure (c) and colour (d) each let through
different scenes the other catches (measured in tests/unit/test_near_dedupe.py on generated
bursts and look-alike scenes: hash distances overlap, 22 bits for two distinct scenes against
up to 45 within a burst, but no distinct pair under 28 bits was within 12 colour levels).

The difference hash (dHash): the picture in grey at 17x16, one bit per pair of horizontal
neighbours (is the left one brighter?). It ignores scale, compression and small exposure
changes, and moves a few bits when the subject moves a little, as it does within a burst.

Grouping is pure (`cluster`): within one coarse group (one camera, one minute of capture time,
`coarse_key`), photos are taken in time order and each joins the first cluster whose
*representative* it is near, else starts one. Comparing with the representative, never with
the last member, keeps a slow pan from chaining distinct scenes together.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from PIL import Image

HASH_SIDE = 16  # 16 x 16 = 256 bits
BUCKET_S = 60  # photos are compared within one camera's minute (one worker's group)


@dataclass(frozen=True)
class NearSettings:
    """How near is near-identical: hash bits that may differ, and seconds between shots."""

    max_distance: int = 28
    seconds: float = 10.0
    max_color: float = 12.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= HASH_SIDE * HASH_SIDE:
            raise ValueError("max_distance must be between 0 and 256")
        if self.seconds < 0 or self.max_color < 0:
            raise ValueError("seconds and max_color must be 0 or more")


@dataclass(frozen=True)
class Shot:
    """What near-dedupe knows of one photo: its id, camera, capture time and hash."""

    uri: str
    camera: str
    taken_s: float
    dhash: int
    colors: bytes  # 8x8 RGB thumbnail


def fingerprint(jpeg: bytes) -> tuple[int, bytes]:
    """(difference hash, 8x8 RGB thumbnail) of the JPEG prepared for sending, decoded at 1/8
    scale (~64 px: a fraction of a millisecond)."""
    with Image.open(io.BytesIO(jpeg)) as im:
        im.draft("RGB", (HASH_SIDE * 2, HASH_SIDE * 2))
        rgb = im.convert("RGB")
    return dhash(rgb), rgb.resize((8, 8), Image.Resampling.BOX).tobytes()


def color_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two colour thumbnails, in levels (0-255)."""
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / max(1, len(a))


def dhash(im: Image.Image) -> int:
    """The 256-bit difference hash of a decoded picture (any mode, any size)."""
    grey = im.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.BOX)
    pixels = grey.tobytes()
    bits = 0
    width = HASH_SIDE + 1
    for row in range(HASH_SIDE):
        base = row * width
        for col in range(HASH_SIDE):
            bits = (bits << 1) | (pixels[base + col] > pixels[base + col + 1])
    return bits


def distance(a: int, b: int) -> int:
    """Bits in which two hashes differ."""
    return (a ^ b).bit_count()


def seconds_of(taken_at: str | None) -> float | None:
    """A capture time ("2024-07-03T18:40:12", the camera's clock) as seconds on that clock."""
    if not taken_at:
        return None
    try:  # read as UTC: the clock's own zone does not matter, only its differences do
        return datetime.fromisoformat(taken_at).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def coarse_key(camera: str, taken_s: float) -> str:
    """The group a photo is compared within: its camera and the minute it was taken in. A
    burst that straddles a minute is split in two (at worst one more request), never merged
    with another camera's or another minute's photos."""
    return f"{camera}|{int(taken_s // BUCKET_S)}"


def cluster(shots: Sequence[Shot], settings: NearSettings) -> dict[str, str]:
    """follower uri -> representative uri, for the shots of one coarse group; representatives
    and lone shots are not in it. Deterministic: the same shots give the same answer in any
    order."""
    ordered = sorted(shots, key=lambda s: (s.taken_s, s.uri))
    representatives: list[Shot] = []
    followers: dict[str, str] = {}
    for shot in ordered:
        for rep in representatives:
            if (rep.camera == shot.camera
                    and abs(shot.taken_s - rep.taken_s) <= settings.seconds
                    and distance(rep.dhash, shot.dhash) <= settings.max_distance
                    and color_distance(rep.colors, shot.colors) <= settings.max_color):
                followers[shot.uri] = rep.uri
                break
        else:
            representatives.append(shot)
    return followers
