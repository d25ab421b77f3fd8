"""ImageRef: one image to caption, as input expansion names it (before anything reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beam_caption.inputs.metadata import PhotoMeta


# ImageRef.problem of a listed file whose name is not UTF-8 (every other problem is a manifest
# row's).
UNREADABLE_NAME = "the file's name is not valid UTF-8"
BAD_FILE_NAME, BAD_MANIFEST_ROW = "bad_file_name", "bad_manifest_row"


@dataclass(frozen=True)
class ImageRef:
    """One image to caption: where it is, an optional caller id and an optional per-image prompt.

    `size` and `modified` come from a listing (a glob, a GCS inventory report): they identify
    this version of the file without reading it, so a resumed run skips an unchanged file
    unread. `problem` is set instead of a usable `uri` when a manifest row names no image (the
    row becomes an error row, never a crash). `meta` holds what a sidecar (Google Takeout's
    JSON) says about the photo (inputs/library.py).
    """

    uri: str
    source_id: str | None = None
    prompt: str | None = None
    size: int | None = None
    modified: float | None = None
    problem: str | None = None
    meta: PhotoMeta | None = None

    @property
    def problem_code(self) -> str | None:
        """The error code of a ref that names nothing readable (None when it can be read):
        bad_file_name for a listed file whose name is not UTF-8, else bad_manifest_row."""
        if self.problem is None:
            return None
        return BAD_FILE_NAME if self.problem.startswith(UNREADABLE_NAME) else BAD_MANIFEST_ROW

    @property
    def version(self) -> str | None:
        """This file's version as listed (size and modification time to the millisecond), or
        None when the input did not say (URLs, manifests without those columns)."""
        return file_version(self.size, self.modified)


def file_version(size: int | None, modified: float | None) -> str | None:
    """A listed file's version: its size and modification time rounded to milliseconds (a
    local listing, Beam's GCS listing and an inventory report's RFC 3339 time then agree)."""
    if size is None or modified is None:
        return None
    return f"{size}:{round(modified * 1000)}"
