"""What each file of a phone library is, by its name and its neighbours: a photo, a video, or a
file to skip (a sidecar, a system file, a thumbnail, a Live Photo's motion part).

Pure functions on names, no I/O; inputs/library.py runs them in Beam. Files are grouped by
their folder and stem (`group_key`), the only neighbours that matter here: `IMG_0001.HEIC`,
`IMG_0001.MOV` (its Live Photo motion), `IMG_0001.AAE` (Apple's edit sidecar) and
`IMG_0001.HEIC.json` / `IMG_0001.HEIC.supplemental-metadata.json` (Google Takeout's metadata)
share the key `(folder, "img_0001")`. Takeout also writes `IMG_0001(1).JPG` beside
`IMG_0001.JPG(1).json` for a second photo of the same name, hence the "(n)" removed from stems.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PHOTO, VIDEO = "photo", "video"
# Skipped kinds, as counted in run-summary.json's "skipped".
AAE_SIDECAR, XMP_SIDECAR, TAKEOUT_JSON, SYSTEM_FILE, THUMBNAIL, LIVE_PHOTO_MOTION, DOCUMENT = (
    "aae_sidecar", "xmp_sidecar", "takeout_json", "system_file", "thumbnail",
    "live_photo_motion", "document")
# The same file, id and prompt listed again (two --input patterns that overlap, a manifest line
# repeated): one row for it, not one per listing.
LISTED_AGAIN = "listed_again"
VIDEO_SKIPPED = "video"  # --video skip
VIDEO_MODES = ("keyframes", "skip")

VIDEO_EXTENSIONS = frozenset({".mov", ".mp4", ".m4v", ".3gp", ".avi", ".mkv", ".webm", ".mts",
                              ".m2ts", ".qt"})
# Stills a Live Photo's motion part can sit beside.
_STILL_EXTENSIONS = frozenset({".heic", ".heif", ".jpg", ".jpeg", ".dng", ".png", ".avif"})
_BY_EXTENSION = {".aae": AAE_SIDECAR, ".xmp": XMP_SIDECAR, ".json": TAKEOUT_JSON,
                 ".thm": THUMBNAIL, ".nomedia": SYSTEM_FILE, ".ini": SYSTEM_FILE,
                 ".db": SYSTEM_FILE, ".plist": SYSTEM_FILE, ".lnk": SYSTEM_FILE,
                 ".html": DOCUMENT, ".htm": DOCUMENT, ".txt": DOCUMENT, ".csv": DOCUMENT,
                 # A manifest kept beside the photos it lists (every manifest format).
                 ".jsonl": DOCUMENT, ".parquet": DOCUMENT}
_SYSTEM_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini",
                           ".picasa.ini", "picasa.ini", ".localized", "icon\r"})
# Folders of generated thumbnails: Android's DCIM/.thumbnails, Synology's @eaDir, and others.
_THUMBNAIL_FOLDERS = frozenset({".thumbnails", "@eadir", ".thumbs", ".thumb"})
_COPY_SUFFIX = re.compile(r"\(\d+\)$")


@dataclass(frozen=True)
class Skipped:
    """A listed file that is not sent, and why (its kind); counted, never an error row."""

    uri: str
    kind: str


def split_name(uri: str) -> tuple[str, str]:
    """(folder with its trailing slash, file name) of a path or URL (an http(s) URL's query
    string left out; a "?" in any other path is part of the name)."""
    path = uri.split("?", 1)[0] if uri.startswith(("http://", "https://")) else uri
    cut = path.rfind("/") + 1
    return path[:cut], path[cut:]


def extension(name: str) -> str:
    """The last extension of a file name, lower case with its dot ('' when none)."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def kind_of(uri: str) -> str:
    """PHOTO, VIDEO or a skipped kind, from the name alone (a Live Photo's motion part needs
    its neighbours: see sort_group). Unknown extensions are PHOTO: decoding decides, and a file
    that is not an image becomes an error row rather than vanishing."""
    folder, name = split_name(uri)
    lower = name.lower()
    if lower in _SYSTEM_NAMES or lower.startswith("._"):
        return SYSTEM_FILE  # ._* are macOS AppleDouble resource forks on non-Mac disks
    if any(part.lower() in _THUMBNAIL_FOLDERS for part in folder.split("/")):
        return THUMBNAIL
    ext = extension(lower)
    if ext in VIDEO_EXTENSIONS:
        return VIDEO
    return _BY_EXTENSION.get(ext, PHOTO)


def media_type_of(uri: str) -> str:
    """"video" for a file named as a video, else "image" (what a request key depends on)."""
    return "video" if kind_of(uri) == VIDEO else "image"


def group_key(uri: str) -> str:
    """The folder and stem that a file shares with its sidecars and Live Photo motion part."""
    folder, name = split_name(uri)
    stem = name.split(".", 1)[0] if not name.startswith(".") else name
    return folder + _COPY_SUFFIX.sub("", stem).lower()


def live_photo_motion(uri: str, neighbours: list[str]) -> bool:
    """True for a video beside a still of the same name but for the extension (its Live
    Photo: IMG_0001.HEIC and IMG_0001.MOV). The whole name counts, not the group's stem:
    `2024.07.03 beach.mp4` is not the motion of `2024.07.03 sunset.jpg`."""
    if kind_of(uri) != VIDEO:
        return False
    stem = _full_stem(split_name(uri)[1])
    for other in neighbours:
        name = split_name(other)[1]
        if other != uri and extension(name) in _STILL_EXTENSIONS and _full_stem(name) == stem:
            return True
    return False


def _full_stem(name: str) -> str:
    """A file name without its last extension, lower case. Takeout's "(n)" stays: IMG_5(1).MOV
    is the motion of IMG_5(1).HEIC, not of IMG_5.JPG."""
    dot = name.rfind(".")
    return (name[:dot] if dot > 0 else name).lower()


def takeout_target(json_uri: str, photos: list[str]) -> str | None:
    """The photo a Takeout JSON sidecar describes, among its group's photos, else None.

    Names tried: `NAME.json`, `NAME.supplemental-metadata.json` (and its truncations, which
    Takeout cuts to fit 51 characters), `NAME(n).json` for `STEM(n).EXT`; failing those, the one
    photo of the group.
    """
    _, name = split_name(json_uri)
    base = name[: -len(".json")] if name.lower().endswith(".json") else name
    copy = re.search(r"(\(\d+\))$", base)
    if copy:  # IMG_0001.JPG(1).json describes IMG_0001(1).JPG
        stem, _, ext = base[: copy.start()].rpartition(".")
        base = f"{stem}{copy.group(1)}.{ext}" if stem else base
    by_name = {split_name(p)[1].lower(): p for p in photos}
    lower = base.lower()
    if lower in by_name:
        return by_name[lower]
    for photo_name, photo in by_name.items():
        # "IMG_0001.HEIC.supplemental-metadata" and its cut-off forms ("IMG_0001.HEIC.suppl")
        if lower.startswith(photo_name + "."):
            return photo
    return photos[0] if len(photos) == 1 else None
