"""Running a job on this machine: worker processes that survive Ctrl-C, and what Ctrl-C does.

The first Ctrl-C (or SIGTERM) asks every worker process to stop sending: the launcher writes a
flag file in its control folder, which each process watches (engine/stop.py). Requests in flight
get a grace period to bring their answers home; images not yet sent become `interrupted` error
rows; the pipeline then ends as usual and writes every answer to Parquet. A second Ctrl-C ends the
worker processes and the launcher at once: what they had received is already in the answer
journal (pipeline/journal.py), which the next `--resume` reads. No worker is left running
either way.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from beam_caption.engine.stop import INTERRUPT_FILE
from beam_caption.errors import RunAborted
from beam_caption.pipeline import journal
from beam_caption.runner.worker import CONTROL_DIR_ENV

_LOG = logging.getLogger(__name__)
EXIT_INTERRUPTED = 130


class _MultiProcessingNote(logging.Filter):
    """Hides FnApiRunner's advice to use multi_processing: our workers are multi-processing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "direct_num_workers is not equal to 1" not in record.getMessage()


def local_runner(options: PipelineOptions) -> tuple[Any, PipelineOptions]:
    """(FnApiRunner, the options to run it with).

    In multi-processing mode the workers are beam_caption.runner.worker processes (Beam's SDK worker
    that ignores SIGINT) instead of Beam's own command, which FnApiRunner would pick itself for
    `--direct_running_mode=multi_processing`; so the options handed to it say in_memory, and the
    worker count stays.
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms import environments

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return FnApiRunner(), options
    # The handoff claims a worker the launcher forked (runner/forked.py), or becomes one.
    command = f"exec {sys.executable} -m beam_caption.runner.handoff"
    environment = environments.SubprocessSDKEnvironment.from_command_string(command)
    runner_options = PipelineOptions([], **{
        **options.get_all_options(drop_default=True, retain_unknown_options=True),
        "direct_running_mode": "in_memory"})
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(
        _MultiProcessingNote())
    return FnApiRunner(default_environment=environment), runner_options


class _Interrupts:
    """The launcher's SIGINT/SIGTERM handler for one run."""

    def __init__(self, control_dir: str, grace_s: float, output: str) -> None:
        self.control_dir = control_dir
        self.grace_s = grace_s
        self.output = output
        self.count = 0

    def handle(self, signum: int, frame: Any) -> None:
        """First signal: ask the workers to stop sending. Second: end everything now."""
        self.count += 1
        if self.count == 1:
            with open(os.path.join(self.control_dir, INTERRUPT_FILE), "w") as flag:
                flag.write(signal.Signals(signum).name)
            print(f"\nbeam-caption: stopping: nothing new is sent; requests in flight get up to "
                  f"{self.grace_s:g} s, then every answer is written to {self.output} "
                  "(Ctrl-C again to quit at once; answers received so far are kept)",
                  file=sys.stderr, flush=True)
            return
        self.kill_workers()
        journal.flush_all()
        print(f"\nbeam-caption: stopped at once; the answers received so far are kept in "
              f"{self.output}; run the same command with --resume to caption the rest",
              file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)

    def kill_workers(self) -> None:
        """SIGKILL every worker process that recorded its pid in the control folder."""
        for path in glob.glob(os.path.join(self.control_dir, "worker-*.pid")):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(open(path).read().strip()), signal.SIGKILL)  # noqa: SIM115


@contextlib.contextmanager
def _handling(interrupts: _Interrupts) -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_env = os.environ.get(CONTROL_DIR_ENV)
    os.environ[CONTROL_DIR_ENV] = interrupts.control_dir  # worker processes inherit it
    for sig in previous:
        signal.signal(sig, interrupts.handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if old_env is None:
            os.environ.pop(CONTROL_DIR_ENV, None)
        else:
            os.environ[CONTROL_DIR_ENV] = old_env


@contextlib.contextmanager
def quit_on_interrupt(message: str) -> Iterator[None]:
    """Within: Ctrl-C or SIGTERM ends the process at once, exit 130, after one line on stderr
    (`message`, what to run next). For steps that can stop anywhere and lose nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def quit_now(signum: int, frame: Any) -> None:
        print(f"\nbeam-caption: {message}", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, quit_now)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_local(pipeline: beam.Pipeline, *, control_dir: str, grace_s: float,
              output: str) -> tuple[Any, bool]:
    """Run `pipeline` to the end, answering Ctrl-C as described above; (result, interrupted).

    The pipeline runs on a thread so that the main thread stays free for signal handlers. A
    worker process that dies (killed, out of memory) ends the run with RunAborted: its answers
    are in the journal for --resume.
    """
    interrupts = _Interrupts(control_dir, grace_s, output)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            result = pipeline.run()
            result.wait_until_finish()
            box["result"] = result
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="beam-caption-pipeline", daemon=True)
    in_main = threading.current_thread() is threading.main_thread()
    with _handling(interrupts) if in_main else contextlib.nullcontext():
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    error = box.get("error")
    if error is not None:
        interrupts.kill_workers()
        if _worker_died(error):
            raise RunAborted(f"a worker process ended unexpectedly ({_first_line(error)}); the "
                             f"answers it had received are kept in {output}: run the same "
                             "command with --resume to caption the rest") from error
        raise error
    return box["result"], interrupts.count > 0


def _worker_died(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return any(marker in text for marker in (
        "Channel closed prematurely", "Worker subprocess exited", "StatusCode.UNAVAILABLE",
        "Socket closed"))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
