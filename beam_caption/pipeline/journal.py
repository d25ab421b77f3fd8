"""The answer journal: every paid answer is persisted within seconds, by the process that paid.

WriteToParquet makes rows visible only when the whole job finalizes, so an interrupted run would
lose every answer it had paid for. Each worker process therefore appends the rows that carry an
answer (caption rows, and error rows whose answer was billed) to its own journal files under
OUTPUT/_journal/<run_id>/ as the answers arrive:

- on local disk, one line per answer, appended and flushed to the operating system at once (a
  kill -9 of the process loses nothing that was appended);
- on object stores (gs://, s3://), which cannot append, a new small object every second or so
  with the lines since the last one (an object is visible whole or not at all).

Lines are JSON: {"table": "captions"|"errors", "row": {...}}. A line cut short by a crash is
skipped on read. A finished run deletes its journal after its Parquet files and summary are
written; `--resume` (and `beam-caption report`) read what an interrupted run left behind, keeping
one row per (request_key, uri) that the Parquet tables do not already hold.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_caption import resources
from beam_caption.layout import journal_root

_LOG = logging.getLogger(__name__)
CAPTIONS, ERRORS = "captions", "errors"
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_LINES_PER_LOCAL_FILE = 50_000
_REMOTE_FLUSH_S = 1.0
_REMOTE_FLUSH_LINES = 5_000


def encode_line(table: str, row: dict[str, Any]) -> str:
    """One journal line (no newline) for a row of `table`."""
    return json.dumps({"table": table, "row": row}, default=_json_default,
                      separators=(",", ":"), ensure_ascii=False)


def decode_line(line: str | bytes) -> tuple[str, dict[str, Any]] | None:
    """(table, row) from a journal line, or None for a line cut short or not ours."""
    try:
        record = json.loads(line)
        table, row = record["table"], record["row"]
    except (ValueError, KeyError, TypeError):
        return None
    if table not in (CAPTIONS, ERRORS) or not isinstance(row, dict):
        return None
    for name in ("created_at", "taken_at"):  # the two datetimes of a row
        value = row.get(name)
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value)
    return table, row


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal a {type(value).__name__}")


class AnswerJournal:
    """One process's journal for one run: thread-safe `append`, persisted as described above."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._local = not _SCHEME.match(directory)
        self._writer = f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._sequence = 0
        self._handle: Any = None
        self._lines_in_file = 0
        self._buffer: list[str] = []
        self._closed = False
        self._wakeup = threading.Event()
        self._flusher: threading.Thread | None = None
        self.lines_written = 0

    def append(self, table: str, row: dict[str, Any]) -> None:
        """Persist one row now (local) or within about a second (object stores)."""
        line = encode_line(table, row) + "\n"
        with self._lock:
            if self._local:
                self._append_local(line)
            else:
                self._buffer.append(line)
                self._start_flusher()
                if len(self._buffer) >= _REMOTE_FLUSH_LINES:
                    self._wakeup.set()
            self.lines_written += 1

    def flush(self) -> None:
        """Make everything appended so far durable (fsync locally, an object remotely)."""
        with self._lock:
            if self._local:
                if self._handle is not None:
                    self._handle.flush()
                    os.fsync(self._handle.fileno())
            else:
                self._write_remote()

    def close(self) -> None:
        """Flush and stop; later appends open new files."""
        self.flush()
        with self._lock:
            self._closed = True
            if self._handle is not None:
                self._handle.close()
                self._handle = None
        self._wakeup.set()

    def _next_path(self) -> str:
        self._sequence += 1
        return FileSystems.join(self.directory, f"{self._writer}-{self._sequence:05d}.jsonl")

    def _append_local(self, line: str) -> None:
        if self._handle is None or self._lines_in_file >= _LINES_PER_LOCAL_FILE:
            if self._handle is not None:
                self._handle.close()
            os.makedirs(self.directory, exist_ok=True)
            self._handle = open(self._next_path(), "a", encoding="utf-8")  # noqa: SIM115
            self._lines_in_file = 0
        self._handle.write(line)
        self._handle.flush()  # to the OS: survives a kill -9 of this process
        self._lines_in_file += 1

    def _write_remote(self) -> None:
        """Write the buffered lines as one new object (caller holds the lock)."""
        if not self._buffer:
            return
        data = "".join(self._buffer).encode("utf-8")
        path = self._next_path()
        with FileSystems.create(path, mime_type="application/x-ndjson") as handle:
            handle.write(data)
        self._buffer = []

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._closed = False
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="beam-caption-journal")
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            self._wakeup.wait(_REMOTE_FLUSH_S)
            self._wakeup.clear()
            with self._lock:
                try:
                    self._write_remote()
                except Exception:  # the next tick tries again; the lines stay buffered
                    _LOG.exception("could not write the answer journal in %s", self.directory)
                if self._closed and not self._buffer:
                    return


def process_journal(directory: str) -> AnswerJournal:
    """This process's journal for the run whose journal directory is `directory` (kept)."""
    return resources.kept(("journal", directory), lambda: AnswerJournal(directory))


@atexit.register
def flush_all() -> None:
    """Flush every journal of this process (at exit, and before a hard stop)."""
    for _, journal in resources.values("journal"):
        try:
            journal.flush()
        except Exception:  # at exit: say so, keep going
            _LOG.exception("could not flush the answer journal in %s", journal.directory)


# -- reading ----------------------------------------------------------------------------------


def journal_files(output: str) -> list[str]:
    """Every journal file under OUTPUT/_journal (all runs), sorted."""
    pattern = FileSystems.join(journal_root(output), "*", "*.jsonl")
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # no journal directory at all
        return []
    return sorted(meta.path for meta in found)


def read_journal_file(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (table, row) pairs of one journal file, skipping lines cut short."""
    with FileSystems.open(path) as handle:
        data = handle.read()
    for line in data.splitlines():
        if line.strip():
            decoded = decode_line(line)
            if decoded is not None:
                yield decoded


def journal_runs(output: str) -> tuple[str, ...]:
    """The run ids with journal files under `output` (interrupted runs not yet folded in)."""
    return tuple(sorted({run_of(p) for p in journal_files(output)}))


def run_of(path: str) -> str:
    """The run id a journal file belongs to (its directory's name)."""
    return path.rstrip("/").rsplit("/", 2)[-2]


def delete_journals(output: str, run_ids: Iterable[str]) -> int:
    """Delete the journal files of `run_ids` (their answers are in Parquet now); how many."""
    wanted = set(run_ids)
    paths = [p for p in journal_files(output) if run_of(p) in wanted]
    if paths:
        FileSystems.delete(paths)
    root = journal_root(output)
    if not _SCHEME.match(root):
        for run_id in wanted:
            _remove_empty_dir(os.path.join(root, run_id))
        _remove_empty_dir(root)
    return len(paths)


def _remove_empty_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # not empty (another run's journal) or already gone
        os.rmdir(path)
