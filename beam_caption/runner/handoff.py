"""The local worker command the FnApiRunner starts: it hands its environment to a worker forked
from the launcher (runner/forked.py) and lives exactly as long as that worker, or, when none is
waiting, becomes an ordinary worker process (runner/worker.py).

It imports nothing but the standard library, so it is running ~30 ms after the runner starts it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import sys

from beam_caption.runner.forked import FORKED_DIR_ENV, READY_PREFIX, TAKEN_PREFIX


def claim(folder: str) -> socket.socket | None:
    """A connection to one waiting forked worker of `folder`, claimed by renaming its socket
    (atomic: two handoffs never get the same worker); None when none is left."""
    for path in sorted(glob.glob(os.path.join(folder, f"{READY_PREFIX}*.sock"))):
        # The same length as the ready name: it had to fit AF_UNIX's path limit too.
        taken = path.replace(READY_PREFIX, TAKEN_PREFIX, 1)
        try:
            os.rename(path, taken)
        except OSError:
            continue  # another handoff was first
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(taken)
        except OSError:
            conn.close()
            continue  # that worker has gone (released or killed)
        return conn
    return None


def main() -> None:
    """Claim a forked worker and wait for its end, or exec a fresh worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as the worker: the launcher decides
    folder = os.environ.get(FORKED_DIR_ENV)
    conn = claim(folder) if folder else None
    if conn is None:
        os.execv(sys.executable, [sys.executable, "-m", "beam_caption.runner.worker"])
    reader = conn.makefile("rb")
    conn.sendall((json.dumps(dict(os.environ)) + "\n").encode())
    pid = int(reader.readline() or 0)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        os._exit(128 + signum)

    if pid:
        signal.signal(signal.SIGTERM, forward)
    code = 1  # the worker ended without saying how (killed): the runner must see a failure
    for line in reader:
        if line.startswith(b"exit "):
            code = int(line.split()[1])
            break
    os._exit(code)


if __name__ == "__main__":
    main()
