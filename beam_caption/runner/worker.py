"""The local worker process: Beam's SDK worker, started so that Ctrl-C does not kill it.

A terminal sends Ctrl-C (SIGINT) to every process in its foreground group: the launcher and its
FnApiRunner worker processes. Beam's own worker would die at once with a KeyboardInterrupt and
lose the answers in flight. This one ignores SIGINT and leaves the decision to the launcher, which
asks the workers to stop sending through a flag file (engine/stop.py) and waits for the answers
already on their way. It records its pid in the launcher's control folder, so that a second
Ctrl-C can end it at once; SIGTERM and SIGKILL still work as usual, and a worker whose launcher
has gone away exits on its own (Beam's control channel closes).
"""

from __future__ import annotations

import os
import signal
import sys

from beam_caption.auth.gcloud import settle_in_worker
from beam_caption.quick_exit import exit_now
from beam_caption.runner.allocators import settle_allocators

CONTROL_DIR_ENV = "BEAM_CAPTION_CONTROL_DIR"


def _record_pid() -> None:
    folder = os.environ.get(CONTROL_DIR_ENV)
    if folder and os.path.isdir(folder):
        try:
            with open(os.path.join(folder, f"worker-{os.getpid()}.pid"), "w") as handle:
                handle.write(str(os.getpid()))
        except OSError:
            pass  # only the second Ctrl-C needs it; the launcher then finds fewer pids


def serve() -> int:
    """Ignore SIGINT, note the pid, then run Beam's SDK worker (its addresses come from the
    environment); the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _record_pid()
    settle_in_worker()
    settle_allocators()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)
    return 0


def main() -> None:
    """A worker process started from scratch (see runner/forked.py for the forked ones)."""
    serve()
    # The harness has torn every DoFn down (the journal is flushed in teardown): what is left
    # is unloading modules, while the launcher waits for this worker before the next.
    exit_now(0)


if __name__ == "__main__":
    main()
