"""Worker log lines as people read them.

Local worker processes send their log records to the launcher, which Beam prints as the whole
log-entry message ("Worker: severity: WARN timestamp { seconds: ... } message: \"...\"
log_location: ..."). This filter keeps beam-caption's own warnings and errors and anything Beam
calls an error, each as "worker <pid>: <message>", and drops the rest (Beam's start-up notes).
"""

from __future__ import annotations

import ast
import logging
import re

RELAY_LOGGER = "apache_beam.runners.portability.local_job_service"
_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_LOCATION = re.compile(r'log_location: "((?:[^"\\]|\\.)*)"')
_PREFIX = "Worker: "


def _unquote(text: str) -> str:
    """A protobuf text-format string (octal escapes for UTF-8 bytes) as text."""
    try:
        return ast.literal_eval(f'b"{text}"').decode("utf-8", "replace")
    except (ValueError, SyntaxError):
        return text


class WorkerLogFilter(logging.Filter):
    """Rewrites relayed worker records; drops Beam's own below ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep (rewritten) or drop one relayed record."""
        text = record.getMessage()
        if not text.startswith(_PREFIX):
            return True
        message = _MESSAGE.search(text)
        location = _LOCATION.search(text)
        ours = location is not None and "beam_caption" in location.group(1)
        if not ours and record.levelno < logging.ERROR:
            return False
        record.name = "beam_caption.worker"
        record.msg = "%s"
        record.args = (_unquote(message.group(1)) if message else text[len(_PREFIX):],)
        return True


def install() -> None:
    """Relay beam-caption's worker warnings readably (once per process)."""
    relay = logging.getLogger(RELAY_LOGGER)
    if not any(isinstance(f, WorkerLogFilter) for f in relay.filters):
        relay.addFilter(WorkerLogFilter())
    relay.setLevel(logging.WARNING)
