"""Structured logs: one JSON object per line, with personal data masked.

The receiver logs one line per request (request id, topic, xid, action, status, latency). Tokens
never reach a log (they are not in the fields), and anything that looks like an e-mail address
or a phone number in a message or field is masked before it is written. In a receiver worker the
lines are formatted and written by one background thread, so request threads never queue on the
log file.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
from datetime import UTC, datetime

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d ()-]{6,}\d(?![\w-])")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
PROJECT_LOGGERS = ("core", "connector", "cli", "pipelines", "warehouse", "dashboard")
"""The Python loggers of this project's packages."""
PERSONAL_FIELDS = {"email", "phone", "name", "username"}
OWN_FIELDS = {"request_id", "topic", "source_ip", "object_key"}
"""Fields the connector itself generates (ids, names): no sender text, nothing to mask."""


_MAYBE_PERSONAL = re.compile(r"[@\d]")
"""Both patterns need an ``@`` or a digit: text without either is returned as it is."""


def mask_personal_data(text: str) -> str:
    """Mask e-mail addresses and phone-like numbers in free text."""
    if _MAYBE_PERSONAL.search(text) is None:
        return text
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(lambda m: "*" * (len(m.group()) - 2) + m.group()[-2:], text)


_encode_json_line = json.JSONEncoder(default=str, ensure_ascii=False).encode


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; ``extra=`` fields become keys, masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_personal_data(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            if key in PERSONAL_FIELDS and value is not None:
                value = "***"
            elif isinstance(value, str) and key not in OWN_FIELDS:
                value = mask_personal_data(value)
            elif isinstance(value, BaseException):
                value = mask_personal_data(f"{type(value).__name__}: {value}")
            entry[key] = value
        if record.exc_info:
            entry["exc"] = mask_personal_data(self.formatException(record.exc_info))
        return _encode_json_line(entry)


class _RecordQueueHandler(logging.handlers.QueueHandler):
    """Queues each record as it is, so that the listener's thread, not the request's, formats
    it (JSON, masking): under a threaded server, request threads otherwise take turns on the
    handler's lock around formatting and a write per line."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure_logging(level: str = "INFO", background: bool = False) -> None:
    """Send the ``connector``, ``pipelines`` and ``warehouse`` loggers to stderr as JSON lines.

    ``background=True`` formats and writes them in one thread (the standard library's
    ``QueueListener``), stopped at exit after the last line: for a threaded server process that
    will not fork again, such as a gunicorn worker.
    """
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter())
    handler: logging.Handler = stream
    if background:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(records, stream)
        listener.start()
        atexit.register(listener.stop)
        handler = _RecordQueueHandler(records)
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
