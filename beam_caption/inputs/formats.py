"""The formats of a phone library beyond what Pillow opens alone: HEIC/HEIF, camera RAW previews,
and the frame of an animation that stands for it.

- HEIC/HEIF (the iPhone's default since 2017) through pillow-heif's Pillow plugin, registered
  once per process. Its `Image.open` reads the container's boxes only (size, EXIF, the
  `irot`/`imir` transforms) and decodes nothing until `load()`, so a header read stays cheap.
  libheif applies the transforms when decoding and pillow-heif resets the EXIF orientation to
  1, so a HEIC's size and pixels are already upright. AVIF and WebP are Pillow's own (AVIF since
  Pillow 11).
- Camera RAW (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, ...): never developed. Every such file
  embeds a JPEG preview made by the camera (a DNG as its own IFD, a CR3 in a box, a NEF as a
  sub-IFD); the largest JPEG found in the file is sent. Pure Python plus Pillow's JPEG header:
  a native RAW library (LibRaw through rawpy) would parse untrusted files in C, where a
  malformed one can crash the worker instead of becoming an error row.
- Animated GIF, WebP and PNG: the middle frame (the first is often a fade-in or blank). An MPO
  (a camera's multi-picture JPEG) keeps its first picture, which is the primary one.
"""

from __future__ import annotations

import io
import threading

from PIL import Image

from beam_caption.inputs.metadata import PhotoMeta, exif_meta

# Camera RAW extensions whose embedded preview is sent (lower case, with the dot).
RAW_EXTENSIONS = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf",
    ".rw2", ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".mef",
})
# Formats whose animations are represented by their middle frame (MPO is not one: its first
# picture is the photo, the others are previews or the second eye of a stereo pair).
ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
_SOI = b"\xff\xd8\xff"
# Looking at every FF D8 FF in 50 MB of sensor data would be slow and pointless: real previews
# are among the first candidates (they sit in the container's structure, before or after the
# raw data, not inside it).
_MAX_CANDIDATES = 64
# A JPEG's size is in its SOF marker, after its APP segments (each at most 64 KiB): a window
# this large holds it without copying the rest of a 50 MB file for each candidate.
_HEADER_WINDOW = 512 * 1024
_ORIENTATION_TAG = 0x0112

# HEIF brands: pillow-heif opens them (inputs/formats.py); one it cannot read is broken, or
# unsupported when the plugin is missing.
HEIF_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypheim", "HEIC"),
    (4, b"ftypheis", "HEIC"),
    (4, b"ftyphevc", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypmsf1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
)
# Containers Pillow recognises nowhere: say "unsupported", not "broken".
UNSUPPORTED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG/XML"),
)
_REGISTERED = False
_LOCK = threading.Lock()


def register_plugins() -> bool:
    """Register the HEIF opener with Pillow once per process; False when pillow-heif is missing
    (HEIC files then become unsupported_format error rows)."""
    global _REGISTERED
    if _REGISTERED:
        return True
    with _LOCK:
        if not _REGISTERED:
            try:
                import pillow_heif
            except ImportError:
                return False
            # Thumbnails and depth maps are read lazily anyway; no need to list them.
            pillow_heif.register_heif_opener(thumbnails=False, depth_images=False)
            _REGISTERED = True
    return True


def is_raw(uri: str) -> bool:
    """True when `uri` names a camera RAW file (by its extension)."""
    name = uri.rsplit("/", 1)[-1].split("?", 1)[0].lower()
    dot = name.rfind(".")
    return dot > 0 and name[dot:] in RAW_EXTENSIONS


def decodable(uri: str, data: bytes) -> tuple[bytes, int]:
    """(the bytes to decode, the container's EXIF orientation): a camera RAW file's embedded
    preview, or `data` itself (orientation 1) for every other file. Raises NoPreview."""
    return raw_preview(data) if is_raw(uri) else (data, 1)


class NoPreview(ValueError):
    """A RAW file with no embedded JPEG preview that can be read."""


def raw_preview(data: bytes) -> tuple[bytes, int]:
    """The largest embedded JPEG preview of a camera RAW file, and the container's EXIF
    orientation (1 when it says none). Raises NoPreview.

    Each candidate is opened by Pillow (header only) to learn its size; JPEG data runs from its
    SOI marker, and Pillow stops at its end, so the rest of the file is harmless after it.
    """
    best: tuple[int, int] | None = None  # (pixels, offset)
    start, seen = 0, 0
    while seen < _MAX_CANDIDATES:
        offset = data.find(_SOI, start)
        if offset < 0:
            break
        seen += 1
        start = offset + len(_SOI)
        pixels = _jpeg_pixels(data, offset)
        if pixels and (best is None or pixels > best[0]):
            best = (pixels, offset)
    if best is None:
        raise NoPreview("no embedded JPEG preview found (RAW files are never developed)")
    return data[best[1]:], container_orientation(data)


def _jpeg_pixels(data: bytes, offset: int) -> int:
    """The pixel count a JPEG starting at `offset` announces, or 0 when it is not one."""
    try:
        with Image.open(io.BytesIO(data[offset:offset + _HEADER_WINDOW])) as im:
            if im.format not in ("JPEG", "MPO"):
                return 0
            return im.width * im.height
    except Exception:  # not a JPEG header: a coincidence in the data
        return 0


def container_orientation(data: bytes) -> int:
    """The EXIF orientation a TIFF-based RAW's first directory states (DNG, CR2, NEF, ARW,
    ORF, RW2, PEF), read by Pillow's TIFF header parser; 1 when absent or unreadable."""
    if data[:2] not in (b"II", b"MM"):
        return 1
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = int(Image.Image.getexif(im).get(_ORIENTATION_TAG, 1))
    except Exception:  # a RAW Pillow cannot parse as TIFF (ORF/RW2 magic): no orientation
        return 1
    return value if 1 <= value <= 8 else 1


def container_meta(data: bytes) -> PhotoMeta:
    """The EXIF facts of a TIFF-based RAW's own directories (camera, time, GPS), read by
    Pillow's TIFF header parser; empty when it cannot parse the container."""
    if data[:2] not in (b"II", b"MM"):
        return PhotoMeta()
    try:
        with Image.open(io.BytesIO(data)) as im:
            return exif_meta(im)
    except Exception:  # a RAW Pillow cannot parse as TIFF: the preview's facts are used
        return PhotoMeta()


def representative_frame(im: Image.Image) -> None:
    """Seek an animated GIF, WebP or PNG to its middle frame (in place); others are left at
    their first frame."""
    if im.format not in ANIMATED_FORMATS or not getattr(im, "is_animated", False):
        return
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        im.seek(frames // 2)


def container_kind(data: bytes, heif_registered: bool) -> tuple[str | None, bool]:
    """(the container `data` starts with among those Pillow cannot identify alone, whether a
    plugin reads it): ("HEIC", True) with pillow-heif registered, ("PDF", False), (None, False).
    """
    head = data[:64].lstrip()
    for offset, magic, name in HEIF_SIGNATURES:
        if head[offset : offset + len(magic)].lower() == magic.lower():
            return name, heif_registered or name == "AVIF"  # AVIF: Pillow's own since 11.2
    for offset, magic, name in UNSUPPORTED_SIGNATURES:
        if head[offset : offset + len(magic)].lower() == magic.lower():
            return name, False
    return None, False
