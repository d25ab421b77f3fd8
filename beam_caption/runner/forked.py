"""Local worker processes forked from the launcher, so that they start with its imports done.

A worker process started from scratch imports Beam, gRPC, Arrow and our modules again: ~0.9 s of
CPU each (2 cores, measured), after the launcher has spent as much on the same imports, so the
first request of a multi-process local run reached the endpoint ~2.5 s after the command started.
Forked from the launcher once its imports are done (and before it starts any thread, gRPC
channel or simulator), a worker is ready at once.

The FnApiRunner still starts its workers itself, as a command it runs and watches: that command
is `beam_caption.runner.handoff`, a tiny process that claims one forked worker through its Unix
socket, hands it the environment the runner gave (the control and logging addresses, the
pipeline options), and lives exactly as long as it (exit code included). A worker that was never
claimed ends when the launcher closes its end of a pipe (or dies); when no forked worker is left,
or none were forked (the launcher has threads running, e.g. under a test harness), the handoff
becomes an ordinary worker process (runner/worker.py).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
from types import TracebackType

FORKED_DIR_ENV = "BEAM_CAPTION_FORKED_WORKERS"
DISABLE_ENV = "BEAM_CAPTION_FORK_WORKERS"  # "0": start every worker from scratch
READY_PREFIX = "ready-"
TAKEN_PREFIX = "taken-"  # a claimed worker's socket, renamed (atomic: one handoff wins)
_REAP_TIMEOUT_S = 10.0

_LOG = logging.getLogger(__name__)


class ForkedWorkers:
    """`count` worker processes forked now and waiting to be claimed; a context manager.

    Entering forks them (only from a launcher with no other thread running, so no lock can be
    inherited held) and points the handoff command at them through FORKED_DIR_ENV; leaving
    releases the unclaimed ones and reaps every one, so none is left behind.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.pids: list[int] = []
        self.statuses: dict[int, int] = {}  # pid -> wait status, once reaped
        self.folder: str | None = None
        self._release_fd: int | None = None

    def __enter__(self) -> ForkedWorkers:
        if self.count < 1 or threading.active_count() > 1 or not hasattr(os, "fork") \
                or os.environ.get(DISABLE_ENV) == "0":
            return self
        # What the worker needs and the launcher has not imported yet (~30 ms), once for all.
        import apache_beam.runners.worker.sdk_worker_main  # noqa: F401

        import beam_caption.runner.worker  # noqa: F401

        self.folder = tempfile.mkdtemp(prefix="beam-caption-workers-")
        listeners: list[socket.socket] = []
        try:  # every socket first: a path too long for AF_UNIX (a deep TMPDIR) forks nothing
            for i in range(self.count):
                listeners.append(_listen(os.path.join(self.folder, f"{READY_PREFIX}{i}.sock")))
        except OSError as exc:
            _LOG.debug("worker processes start from scratch: %s", exc)
            for listener in listeners:
                listener.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            return self
        read_fd, self._release_fd = os.pipe()
        for i, listener in enumerate(listeners):
            pid = os.fork()
            if pid == 0:  # the worker: never returns
                os.close(self._release_fd)
                for other in listeners[i + 1:]:
                    other.close()
                _wait_for_handoff(listener, read_fd)
            listener.close()
            self.pids.append(pid)
        os.close(read_fd)
        os.environ[FORKED_DIR_ENV] = self.folder
        _LOG.debug("%d worker processes forked from the launcher: %s", self.count, self.pids)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.folder is None:
            return
        os.environ.pop(FORKED_DIR_ENV, None)
        if self._release_fd is not None:
            os.close(self._release_fd)  # unclaimed workers see end-of-file and leave
            self._release_fd = None
        deadline = time.monotonic() + _REAP_TIMEOUT_S
        for pid in self.pids:
            self.statuses[pid] = _reap(pid, deadline)
        shutil.rmtree(self.folder, ignore_errors=True)


def _listen(path: str) -> socket.socket:
    """A Unix socket listening at `path` for one handoff."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)
    except OSError:
        listener.close()
        raise
    return listener


def _reap(pid: int, deadline: float) -> int:
    """Wait for `pid` to end (claimed workers end with the pipeline), killing it past deadline;
    its wait status (-1: reaped elsewhere)."""
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        if done:
            return status
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            try:
                return os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return -1
        time.sleep(0.02)


def _wait_for_handoff(listener: socket.socket, release_fd: int) -> None:
    """In the forked worker: wait for a handoff (or the launcher's release), then serve."""
    code = 1
    try:
        # As runner/worker.py: Ctrl-C reaches the whole process group; the launcher decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        atexit._clear()  # the launcher's exit hooks are not this process's
        readable, _, _ = select.select([listener, release_fd], [], [])
        if listener not in readable:
            os._exit(0)  # released unclaimed
        conn, _ = listener.accept()
        listener.close()
        os.close(release_fd)
        environment = json.loads(_read_line(conn))
        os.environ.clear()
        os.environ.update(environment)
        conn.sendall(f"{os.getpid()}\n".encode())
        finishing = threading.Event()
        # The handoff process is what the runner watches and kills: go with it.
        threading.Thread(target=_end_with, args=(conn, finishing), daemon=True,
                         name="beam-caption-handoff").start()
        _fresh_logging()
        from beam_caption.runner.worker import serve

        code = serve()
        finishing.set()
        atexit._run_exitfuncs()  # the journal's last flush, before the handoff reports the end
        with contextlib.suppress(OSError):
            conn.sendall(f"exit {code}\n".encode())
    except BaseException:  # a forked child must never return into the launcher
        traceback.print_exc()
    finally:
        from beam_caption.quick_exit import exit_now

        exit_now(code)


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the handoff process went away")
        data += chunk
    return data.decode()


def _end_with(conn: socket.socket, finishing: threading.Event) -> None:
    """End this worker when its handoff process's end of the socket closes first."""
    with contextlib.suppress(OSError):
        while conn.recv(1024):
            pass
    if not finishing.is_set():
        os._exit(1)


def _fresh_logging() -> None:
    """Logging as a newly started worker has it: Beam's harness adds its own relay handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
