"""The receiver's framework-free core: landing state, envelopes, JSON checks, request records.

Used by the webhook endpoint (``connector.webhooks``) and, for readiness, the Flask routes
(``connector.health``). Reads: every setting of ``core.settings.Settings`` except the pipeline
ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from decimal import Decimal
from typing import Any

from connector import metrics
from connector.auth import TOKEN_HEADER, signing_key
from connector.batching import GroupCommitWriter, NotConfirmed
from core.landing import LandingError, LandingStore
from core.settings import Settings

log = logging.getLogger("connector.requests")

ENVELOPE_VERSION = 1
SECRET_HEADERS = frozenset({TOKEN_HEADER.lower(), "authorization", "proxy-authorization", "cookie"})
"""Headers never landed: they carry credentials."""
_QUERY_TOKEN = re.compile(r"([?&;]token=)[^&#\s]*", re.IGNORECASE)
"""A ``token`` query parameter in a header value (a proxy's ``X-Original-URI``, ``Referer``)."""


class Receiver:
    """Per-app state: settings, landing store, group-commit writer and the readiness prober."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = LandingStore(settings.landing_url, settings.landing_compression)
        self.writer = GroupCommitWriter(
            self.store,
            settings.instance_id,
            settings.batch_max_wait_ms,
            settings.batch_max_events,
        )
        self.token = settings.webhook_token.get_secret_value() if settings.webhook_token else None
        secret = settings.webhook_hmac_secret
        self.hmac_key = signing_key(secret.get_secret_value()) if secret else None
        self._prober = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flavours-readyz")
        self._probe_lock = threading.Lock()
        self._probe: Future | None = None
        self._probe_started = 0.0

    def land(self, topic: str, line: bytes, started: float) -> str:
        """Land one envelope line; returns the object key, raises ``LandingError`` (→ 503)."""
        remaining = self.settings.landing_timeout_s - (time.perf_counter() - started)
        try:
            return self.writer.land(topic, line, timeout=max(remaining, 0.001))
        except NotConfirmed:
            raise NotConfirmed(
                f"landing store did not confirm within {self.settings.landing_timeout_s:g} s"
            ) from None

    def ready(self) -> str | None:
        """``None`` when the landing store takes a write within the timeout, else why not.

        Concurrent and repeated checks share the probe in flight: while the store hangs, one
        probe waits on it and every check ends by that probe's deadline, so checks neither
        queue probes up nor hold request threads for longer.
        """
        with self._probe_lock:
            if self._probe is None or self._probe.done():
                self._probe = self._prober.submit(self.store.check_writable)
                self._probe_started = time.monotonic()
            probe, started = self._probe, self._probe_started
        timeout = self.settings.landing_timeout_s
        try:
            probe.result(timeout=max(timeout - (time.monotonic() - started), 0))
        except FutureTimeout:
            return f"landing store did not answer within {timeout:g} s"
        except LandingError as exc:
            return str(exc)
        return None


# -- one request's identity ----------------------------------------------------------------------

_ids = random.Random()  # noqa: S311 - ids for tracing; seeded from os.urandom, reseeded per fork
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A random version-4 UUID for tracing; it needs to be unique, not unpredictable.

    ``uuid.uuid4()`` reads the kernel's random source on every call, a noticeable share of a
    webhook's CPU budget.
    """
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


def received_at_now() -> str:
    """The envelope's ``received_at``: UTC with microseconds, ``2026-01-02T03:04:05.123456Z``."""
    now = time.time_ns()
    seconds, nanos = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"


_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""``json.dumps`` with these options, without building an encoder on every call."""

# -- envelopes -----------------------------------------------------------------------------------


def landed_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request headers kept in the envelope: lower-case names, credentials left out, and
    a ``?token=`` that a proxy copied into a header (the original URL) redacted.

    Read from the WSGI environ the way Werkzeug's ``EnvironHeaders`` reads them.
    """
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            if key == "HTTP_CONTENT_TYPE" or key == "HTTP_CONTENT_LENGTH":
                continue
            name = key[5:].replace("_", "-").lower()
        elif (key == "CONTENT_TYPE" or key == "CONTENT_LENGTH") and value:
            name = key.replace("_", "-").lower()
        else:
            continue
        if name not in SECRET_HEADERS:
            if "token=" in value.lower():
                value = _QUERY_TOKEN.sub(r"\1[redacted]", value)
            headers[name] = value
    return headers


def envelope(
    environ: Mapping[str, Any],
    request_id: str,
    received_at: str,
    topic: str,
    raw: bytes,
    payload_json: str | None = None,
    **extra: Any,
) -> bytes:
    """One landing line: the documented envelope, with the payload spliced in as received."""
    head = {
        "v": ENVELOPE_VERSION,
        "topic": topic,
        "received_at": received_at,
        "request_id": request_id,
        "source_ip": environ.get("REMOTE_ADDR"),
        "headers": landed_headers(environ),
        "body_sha256": hashlib.sha256(raw).hexdigest(),
        **extra,
    }
    text = _compact_json(head)
    if payload_json is not None:
        text = f'{text[:-1]},"payload":{payload_json}}}'
    return text.encode("utf-8")


def accepted_answer(request_id: str) -> bytes:
    """The 202 body: what Flask's ``jsonify`` would write (sorted keys, compact, a newline)."""
    return b'{"request_id":"%s","status":"accepted"}\n' % request_id.encode()


def error_answer(request_id: str | None, message: str) -> bytes:
    """An error body: what was wrong, and the request id."""
    answer = {"error": message, "request_id": request_id, "status": "error"}
    return (json.dumps(answer, sort_keys=True, separators=(",", ":")) + "\n").encode()


# -- "is it a JSON object" -----------------------------------------------------------------------


def parse_json_object(body: bytes) -> tuple[str, dict[str, Any]]:
    """The body as one-line JSON text and its value; ``ValueError`` says why it is not an object."""
    if not body:
        raise ValueError("empty body: expected a JSON object")
    try:
        text = body.decode("utf-8")
        value = _loads(text)
    except UnicodeDecodeError:
        raise ValueError("body is not valid UTF-8") from None
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"body must be a JSON object, got a JSON {type(value).__name__}")
    # Newlines in valid JSON can only be whitespace between tokens, so the original text, kept
    # byte for byte otherwise, fits on one JSON-lines line without re-serialising numbers.
    return text.replace("\r", " ").replace("\n", " "), value


def _loads(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity and accepts integers of any length."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    # Rare: only bodies with an integer longer than Python's conversion limit pay for this.
    return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)


def _parse_int(digits: str) -> int | Decimal:
    # Python refuses to convert integers longer than 4300 digits (a guard against quadratic
    # conversion); such a number is still valid JSON, kept verbatim, so it is only checked here.
    return int(digits) if len(digits) <= sys.get_int_max_str_digits() else Decimal(digits)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def is_json_mimetype(mimetype: str) -> bool:
    """``application/json`` or any ``+json`` type (``mimetype`` lower-case, no parameters)."""
    return mimetype == "application/json" or mimetype.endswith("+json")


def event_ids(event: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The event's ``xid`` and ``action`` for the request log, when they are strings."""
    xid, action = event.get("xid"), event.get("action")
    return (xid if isinstance(xid, str) else None, action if isinstance(action, str) else None)


# -- the record of every webhook request ---------------------------------------------------------


def record_request(
    *,
    request_id: str,
    topic: str | None,
    status: int,
    started: float,
    source_ip: str | None,
    xid: str | None = None,
    action: str | None = None,
    body_bytes: int | None = None,
    error: str | None = None,
) -> None:
    """One structured log line and the metrics of one webhook request."""
    latency = time.perf_counter() - started
    topic = topic or "unknown"
    metrics.request_counter(topic, status).inc()
    metrics.ack_latency(topic).observe(latency)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "webhook",
            extra={
                "request_id": request_id,
                "topic": topic,
                "xid": xid,
                "action": action,
                "status": status,
                "latency_ms": round(latency * 1000, 2),
                "bytes": body_bytes,
                "source_ip": source_ip,
                "error": error,
            },
        )
