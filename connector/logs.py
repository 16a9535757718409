"""Structured logs: one JSON object per line, with personal data masked.

The receiver logs one line per request (request id, topic, xid, action, status, latency). Tokens
never reach a log (they are not in the fields), and anything that looks like an e-mail address
or a phone number in a message or field is masked before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d ()-]{6,}\d(?![\w-])")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
PERSONAL_FIELDS = {"email", "phone", "name", "username"}


def mask_personal_data(text: str) -> str:
    """Mask e-mail addresses and phone-like numbers in free text."""
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(lambda m: "*" * (len(m.group()) - 2) + m.group()[-2:], text)


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
            elif isinstance(value, str):
                value = mask_personal_data(value)
            elif isinstance(value, BaseException):
                value = mask_personal_data(f"{type(value).__name__}: {value}")
            entry[key] = value
        if record.exc_info:
            entry["exc"] = mask_personal_data(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Send the ``connector`` and ``pipelines`` loggers to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("connector", "pipelines", "warehouse"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
