"""Listing one storage system: a folder's children (one level, streamed) and a folder's whole
subtree (streamed), with each file's size and modification time.

`lister_for(path)` picks local disk (os.scandir), Google Cloud Storage (the storage client's
delimiter and prefix listings, page by page) or, for other schemes, Beam's FileSystems.match,
which can only list a whole subtree in one call (`walk_only`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from beam_caption import resources

_LOG = logging.getLogger(__name__)

@dataclass(frozen=True)
class Entry:
    """One listed file: where it is, how big, and when it last changed (seconds since 1970)."""

    path: str
    size: int | None = None
    modified: float | None = None


class LocalLister:
    """Local disk, with os.scandir (the sizes and times come with the directory entries)."""

    walk_only = False

    def children(self, folder: str) -> Iterator[Entry | str]:
        """The files of `folder` (Entries, streamed in directory order) and then its
        sub-folders (paths ending in "/", sorted): a folder of 100,000 files is never held.

        Nothing listed is dropped without a trace: a link whose target is gone, or a name that
        cannot be looked at, is listed as a file, so reading it makes an error row with the
        reason (not_found, permission_denied); so is a sub-folder that cannot be opened. A
        link to a folder is followed unless it leads back to a folder it is in (a loop).
        """
        folders: list[str] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir():
                            if entry.is_symlink() and _leads_back(folder, entry.path):
                                _LOG.warning("not following %s: it links back to a folder it "
                                             "is in", entry.path)
                                continue
                            folders.append(os.path.join(folder, entry.name) + "/")
                        elif entry.is_file():
                            yield _local_entry(entry)
                        elif entry.is_symlink():
                            yield Entry(entry.path)  # its target is gone: a not_found row
                    except OSError:  # a loop of links, a name we may not look at
                        yield Entry(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError:  # the folder cannot be listed (permission): an error row names it
            yield Entry(folder.rstrip("/"))
            return
        yield from sorted(folders)

    def walk(self, folder: str) -> Iterator[Entry]:
        """Every file under `folder`, depth first, one directory in memory at a time."""
        stack = [folder]
        while stack:
            for child in self.children(stack.pop()):
                if isinstance(child, str):
                    stack.append(child)
                else:
                    yield child

    def stat(self, path: str) -> Iterator[Entry]:
        """The file at `path`, if there is one."""
        if os.path.isfile(path):
            info = os.stat(path)
            yield Entry(path, info.st_size, info.st_mtime)


def _leads_back(folder: str, link: str) -> bool:
    """True when `link` (a link to a folder, inside `folder`) resolves to `folder` or to one
    of the folders it is in: following it would list the same files forever."""
    target = os.path.realpath(link)
    path = os.path.abspath(folder)
    while True:
        if os.path.realpath(path) == target:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def _local_entry(entry: os.DirEntry) -> Entry:
    info = entry.stat()
    return Entry(entry.path, info.st_size, info.st_mtime)


class GcsLister:
    """Cloud Storage, through the client Beam's own GCS filesystem uses (same credentials)."""

    walk_only = False

    def children(self, folder: str) -> Iterator[Entry | str]:
        """One level under `folder` with the "/" delimiter: files streamed, then sub-folders."""
        bucket, prefix = _split_gs(folder)
        blobs = _gcs_client().list_blobs(bucket, prefix=prefix, delimiter="/")
        for blob in blobs:
            if not blob.name.endswith("/"):
                yield _gcs_entry(bucket, blob)
        yield from (f"gs://{bucket}/{sub}" for sub in sorted(blobs.prefixes))

    def walk(self, folder: str) -> Iterator[Entry]:
        """Every object under `folder`, page by page."""
        bucket, prefix = _split_gs(folder)
        for blob in _gcs_client().list_blobs(bucket, prefix=prefix):
            if not blob.name.endswith("/"):
                yield _gcs_entry(bucket, blob)

    def stat(self, path: str) -> Iterator[Entry]:
        """The object at `path`, if there is one."""
        bucket, name = _split_gs(path)
        blob = _gcs_client().bucket(bucket).get_blob(name)
        if blob is not None:
            yield _gcs_entry(bucket, blob)


def _split_gs(path: str) -> tuple[str, str]:
    bucket, _, name = path[len("gs://"):].partition("/")
    return bucket, name


def _gcs_entry(bucket: str, blob: object) -> Entry:
    updated = getattr(blob, "updated", None)
    return Entry(f"gs://{bucket}/{blob.name}", getattr(blob, "size", None),
                 updated.timestamp() if updated is not None else None)


def _gcs_client() -> object:
    """One storage client per process, made as Beam's GCS filesystem makes its own."""
    def create() -> object:
        from apache_beam.io.gcp.gcsio import GcsIO

        return GcsIO().client

    # Keyed by the emulator address too: a process (a test session) may meet more than one.
    return resources.kept(("gcs-client", os.environ.get("STORAGE_EMULATOR_HOST")), create)


class BeamLister:
    """Any other Beam filesystem (s3://, ...): a subtree in one Beam match, nothing finer."""

    walk_only = True

    def children(self, folder: str) -> Iterator[Entry | str]:
        """Not available: BeamLister only walks."""
        raise NotImplementedError("Beam's filesystems list whole subtrees only")

    def walk(self, folder: str) -> Iterator[Entry]:
        """Every file under `folder`, from one FileSystems.match (held in memory by Beam)."""
        for meta in FileSystems.match([folder + "**"])[0].metadata_list:
            yield Entry(meta.path, meta.size_in_bytes, meta.last_updated_in_seconds)

    def stat(self, path: str) -> Iterator[Entry]:
        """The file at `path`, if there is one."""
        for meta in FileSystems.match([path])[0].metadata_list:
            yield Entry(meta.path, meta.size_in_bytes, meta.last_updated_in_seconds)


def lister_for(path: str) -> LocalLister | GcsLister | BeamLister:
    """The lister of `path`'s storage system."""
    if path.startswith("gs://"):
        return GcsLister()
    if "://" in path:
        return BeamLister()
    return LocalLister()
