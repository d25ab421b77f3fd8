"""The benchmark corpora: deterministic photos made from the bundled samples, cached on disk.

Decode cost depends on pixel count and on entropy (bytes per pixel), so camera photos are real
photos (samples/*.jpg) cropped, flipped and scaled up to 12 MP with a fixed film-grain texture
added: an upscaled 640 px photo alone is smooth and compresses to a third of a real camera
file, which would flatter every decoder. Kinds:

- small:  640x480-ish web images (JPEG q85), the throughput corpus;
- medium: 1600x1200 photos (JPEG q90), the seed script's memory comparison;
- camera: 4032x3024 photos (JPEG q92, one in four portrait via EXIF orientation 6) with one in
  ten saved as PNG at 2000x1500 (phones do not shoot PNG; screenshots and scans are);
- phone:  the same 12 MP JPEGs without the PNGs, the headline scenario's camera roll (~3.5 MB
  each, about what a 12 MP phone camera writes).

Image i of a kind depends only on (kind, i), so a 1,000-image corpus extends a 300-image one.
Files live in bench/corpus/<kind>/ and a list file names the first N for a scenario.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
CORPUS_DIR = ROOT / "bench" / "corpus"
VERSION = "v1"  # bump when the recipe changes, so stale caches are not reused
_GRAIN_SIDE = 509  # a prime side, so the tiled grain shows no repeat aligned with 8x8 JPEG blocks
_GRAIN_AMPLITUDE = 24  # grain values span 0..23, centred by the offset below
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Kind:
    """One corpus kind: the size of its photos and how they are stored."""

    name: str
    size: tuple[int, int]
    quality: int
    png_every: int = 0  # every n-th image is a PNG (0: never)
    png_size: tuple[int, int] = (2000, 1500)
    rotate_every: int = 0  # every n-th image is stored portrait with EXIF orientation 6


KINDS = {
    "small": Kind("small", (640, 480), 85),
    "medium": Kind("medium", (1600, 1200), 90),
    "camera": Kind("camera", (4032, 3024), 92, png_every=10, rotate_every=4),
    "phone": Kind("phone", (4032, 3024), 92, rotate_every=4),
}


def corpus(kind: str, count: int, root: Path = CORPUS_DIR) -> Path:
    """Make sure the first `count` images of `kind` exist; return a list file naming them.

    The list file (one absolute path per line) is what both beam-caption (--manifest) and the
    peers read, so every system sees the same images in the same order.
    """
    spec = KINDS[kind]
    folder = root / f"{kind}-{VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / _file_name(spec, i) for i in range(count)]
    missing = [i for i, path in enumerate(paths) if not path.exists()]
    if missing:
        print(f"  making {len(missing)} {kind} images in {folder} ...", flush=True)
        workers = min(os.cpu_count() or 1, len(missing))
        # One chunk of indices per process: each loads the sources and the grain tile once.
        chunks = [(kind, missing[k::workers], str(folder)) for k in range(workers)]
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_chunk, chunks))
    listing = root / f"{kind}-{VERSION}-{count}.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    return listing


def read_list(listing: Path) -> list[Path]:
    """The image paths of a list file written by corpus()."""
    return [Path(line) for line in listing.read_text().splitlines() if line.strip()]


def load_sources() -> list[Image.Image]:
    """The bundled sample photos, upright and in RGB, sorted by name (the recipe's inputs)."""
    images = []
    for path in sorted(SAMPLES.glob("*.jpg")):
        with Image.open(path) as im:
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            rgb = im.convert("RGB")
        if orientation == 6:  # the rotated sample: show it upright like any viewer
            rgb = rgb.transpose(Image.Transpose.ROTATE_270)
        images.append(rgb)
    if not images:
        raise FileNotFoundError(f"no sample photos in {SAMPLES}")
    return images


def _write_chunk(job: tuple[str, list[int], str]) -> None:
    """Write images `indices` of `kind` into `folder` (runs in a worker process)."""
    kind, indices, folder = job
    spec, sources, grain = KINDS[kind], load_sources(), _grain()
    for i in indices:
        _write_photo(spec, i, sources, grain, Path(folder) / _file_name(spec, i))


def _file_name(spec: Kind, i: int) -> str:
    ext = "png" if spec.png_every and i % spec.png_every == spec.png_every - 1 else "jpg"
    return f"{spec.name}-{i:05d}.{ext}"


def _grain() -> Image.Image:
    """A fixed RGB noise tile (seeded), the texture that gives upscaled photos camera entropy."""
    rng = random.Random(f"grain-{VERSION}")
    side = _GRAIN_SIDE
    raw = bytes(b % _GRAIN_AMPLITUDE for b in rng.randbytes(side * side * 3))
    return Image.frombytes("RGB", (side, side), raw)


def _write_photo(spec: Kind, i: int, sources: list[Image.Image], grain: Image.Image,
                 path: Path) -> None:
    """Crop, flip and scale one source photo into image i of `spec`; write it to `path`."""
    rng = random.Random(f"{spec.name}-{i}-{VERSION}")
    is_png = path.suffix == ".png"
    size = spec.png_size if is_png else spec.size
    image = _crop_to_aspect(sources[i % len(sources)], size[0] / size[1], rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize(size, Image.Resampling.BICUBIC)
    # The tile's offset varies per image, so no two images share bytes even from one source.
    dx, dy = rng.randrange(_GRAIN_SIDE), rng.randrange(_GRAIN_SIDE)
    image = ImageChops.add(image, _tiled(grain, size, dx, dy), offset=-_GRAIN_AMPLITUDE // 2)
    tmp = path.with_name(path.name + ".tmp")
    if is_png:
        image.save(tmp, "PNG", compress_level=3)
    elif spec.rotate_every and i % spec.rotate_every == spec.rotate_every - 1:
        # Stored portrait, displayed landscape: what a phone held sideways writes.
        exif = Image.Exif()
        exif[_EXIF_ORIENTATION] = 6
        stored = image.transpose(Image.Transpose.ROTATE_90)
        stored.save(tmp, "JPEG", quality=spec.quality, exif=exif.tobytes())
    else:
        image.save(tmp, "JPEG", quality=spec.quality)
    tmp.replace(path)  # never leave a half-written file a later run would trust


def _crop_to_aspect(image: Image.Image, aspect: float, rng: random.Random) -> Image.Image:
    """A random crop of 70-100% of the source's width (or height) at the given aspect ratio."""
    w, h = image.size
    scale = rng.uniform(0.7, 1.0)
    cw = min(w, round(h * aspect)) * scale
    ch = cw / aspect
    left = rng.uniform(0, w - cw)
    top = rng.uniform(0, h - ch)
    return image.crop((round(left), round(top), round(left + cw), round(top + ch)))


def _tiled(tile: Image.Image, size: tuple[int, int], dx: int, dy: int) -> Image.Image:
    """`tile` repeated over `size`, shifted by (dx, dy)."""
    out = Image.new("RGB", size)
    side = tile.width
    for x in range(-dx, size[0], side):
        for y in range(-dy, size[1], side):
            out.paste(tile, (x, y))
    return out
