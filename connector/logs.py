"""Structured logs: one JSON object per line, with personal data masked.

The receiver logs one line per request (request id, topic, xid, action, status, latency). Tokens
never reach a log (they are not in the fields), and anything that looks like an e-mail address
or a phone number in a message or field is masked before it is written. In a receiver worker the
lines are formatted and written by one background thread, so request threads never queue on the
log file.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sys
import threading
from datetime import UTC, datetime
from typing import TextIO

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d ()-]{6,}\d(?![\w-])")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
PROJECT_LOGGERS = ("connector", "pipelines", "warehouse")
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


class BackgroundLineHandler(logging.Handler):
    """Queues records for one thread that formats them and writes all waiting lines at once.

    Under a threaded server every request logs a line; a plain ``StreamHandler`` makes those
    threads take turns on its lock around formatting and a write per line. Here a request only
    queues its record. Lines keep their order, and ``close`` (run by ``logging.shutdown`` at exit)
    writes what is left. The thread does not survive ``fork``: create the handler after forking.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._write_lines, name="flavours-log-writer", daemon=True
        )
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the queue is the only state shared between threads.
        if self.filter(record):
            self._records.put(record)
            return True
        return False

    def emit(self, record: logging.LogRecord) -> None:
        self._records.put(record)

    def close(self) -> None:
        if self._writer.is_alive():
            self._records.put(None)
            self._writer.join(timeout=5)
        super().close()

    def _write_lines(self) -> None:
        while True:
            records = [self._records.get()]
            while len(records) < 1000:
                try:
                    records.append(self._records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for record in records:
                if record is None:
                    continue
                try:
                    lines.append(self.format(record) + "\n")
                except Exception:
                    self.handleError(record)
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:
                self.handleError(records[-1] or logging.makeLogRecord({}))
            if None in records:
                return


def configure_logging(level: str = "INFO", background: bool = False) -> None:
    """Send the ``connector``, ``pipelines`` and ``warehouse`` loggers to stderr as JSON lines.

    ``background=True`` writes them from one thread (``BackgroundLineHandler``): for a threaded
    server process that will not fork again, such as a gunicorn worker.
    """
    handler = BackgroundLineHandler(sys.stderr) if background else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
