"""The webhook endpoint: every request under ``/webhooks/`` goes through one WSGI callable.

A webhook is answered ``202`` only once its envelope is durable in the landing store. The
receiver validates transport only (authentication, size, content type, "is a JSON object");
schema validation is the pipeline's job, so a schema change at Flavours never loses events.
Authenticated bodies that fail transport validation are kept under ``_rejected/`` with the
reason.

The checks run once, in this order, for accepted and refused webhooks alike: route (404),
method (405), HTTPS when required (403), token (401), body read whole within
``FLAVOURS_MAX_BODY_BYTES`` (413, or 400 when cut short), signature (401), content type (415,
kept), JSON object (400, kept), landing (503 when the store fails). The endpoint reads the WSGI
environ itself rather than through Flask's request objects: a durable ack is the product's
throughput bar, and that machinery costs about as much CPU as landing the event. Every other
path (health, readiness, metrics) is the Flask app's (``connector.health``).
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.datastructures import EnvironHeaders

from connector.auth import TOKEN_HEADER, AuthError, check_signature, check_token
from connector.ingest import (
    Receiver,
    accepted_answer,
    envelope,
    error_answer,
    event_ids,
    is_json_mimetype,
    new_request_id,
    parse_json_object,
    received_at_now,
    record_request,
)
from core.landing import REJECTED_PREFIX, LandingError
from core.settings import TOPICS

log = logging.getLogger("connector.webhooks")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

WEBHOOKS_PATH = "/webhooks/"
WEBHOOK_PREFIX = "/webhooks/flavours/"
NOT_FOUND = "no such endpoint: webhooks go to /webhooks/flavours/<topic> with topic one of " + (
    ", ".join(TOPICS)
)
TOO_LARGE = "body is larger than FLAVOURS_MAX_BODY_BYTES"

_SLASHES = re.compile(r"//+")
_STATUS_LINES = {s.value: f"{s.value} {s.phrase.upper()}" for s in HTTPStatus}


class Refused(Exception):
    """A webhook answered with an error: its status and what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Call:
    """What one request's log line and metrics say about it, filled in as the checks pass."""

    request_id: str
    received_at: str
    started: float
    topic: str | None = None
    xid: str | None = None
    action: str | None = None
    body_bytes: int | None = None


class WebhookEndpoint:
    """WSGI app answering every ``/webhooks/`` request; any other path goes to ``app``."""

    def __init__(self, app: WsgiApp, receiver: Receiver) -> None:
        self.app = app
        self.receiver = receiver
        self.routes = {WEBHOOK_PREFIX + topic: topic for topic in TOPICS}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            path = _SLASHES.sub("/", path)
        if not path.startswith(WEBHOOKS_PATH):
            return self.app(environ, start_response)
        call = _Call(new_request_id(), received_at_now(), time.perf_counter())
        error = None
        try:
            self._receive(environ, path, call)
            status, payload = 202, accepted_answer(call.request_id)
        except Refused as refusal:
            status, error = refusal.status, refusal.message
            payload = error_answer(call.request_id, error)
        except Exception:
            # answered here, not by the WSGI server, whose error line would hold the URL (and
            # its ?token=); Flavours retries a 5xx, so the event is not lost
            log.exception(f"webhook {call.request_id} failed unexpectedly; answered 500")
            status, error = 500, "internal error: the event was not accepted, send it again"
            payload = error_answer(call.request_id, error)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("X-Request-Id", call.request_id),
        ]
        if status == 405:
            headers.append(("Allow", "POST"))
        start_response(_STATUS_LINES[status], headers)
        record_request(
            request_id=call.request_id,
            topic=call.topic,
            status=status,
            started=call.started,
            source_ip=environ.get("REMOTE_ADDR"),
            xid=call.xid,
            action=call.action,
            body_bytes=call.body_bytes,
            error=error,
        )
        return [payload]

    def _receive(self, environ: dict[str, Any], path: str, call: _Call) -> None:
        """Check, then land one webhook; ``Refused`` says why it was not accepted."""
        topic = self.routes.get(path)
        if topic is None:
            raise Refused(404, NOT_FOUND)
        call.topic = topic
        method = environ.get("REQUEST_METHOD", "")
        if method != "POST":
            raise Refused(405, f"method {method} is not allowed here")
        receiver = self.receiver
        if receiver.settings.require_https and environ.get("wsgi.url_scheme") != "https":
            raise Refused(403, "HTTPS is required: send webhooks to the https:// URL")
        headers = EnvironHeaders(environ)
        try:
            if receiver.token is not None:
                check_token(receiver.token, _query_token(environ), headers.get(TOKEN_HEADER))
            body = self._read_body(environ)
            if receiver.hmac_key is not None:
                check_signature(receiver.hmac_key, headers, body)
        except AuthError as exc:
            raise Refused(401, f"unauthenticated: {exc}") from None

        call.body_bytes = len(body)
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if not is_json_mimetype(mimetype):
            reason = f"content type must be application/json, got {mimetype or 'none'!r}"
            self._reject(environ, call, body, 415, reason)
        try:
            text, event = parse_json_object(body)
        except ValueError as exc:
            self._reject(environ, call, body, 400, str(exc))
        call.xid, call.action = event_ids(event)
        line = envelope(environ, call.request_id, call.received_at, topic, body, text)
        self._land(topic, line, call)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        """The whole body: 413 above the limit, 400 when it is cut short or garbled."""
        max_bytes = self.receiver.settings.max_body_bytes
        declared = environ.get("CONTENT_LENGTH") or None
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            raise Refused(400, f"Content-Length {declared!r} is not a number of bytes")
        if declared is not None and int(declared) > max_bytes:
            raise Refused(413, TOO_LARGE)
        try:
            if declared is not None:
                body = environ["wsgi.input"].read(int(declared))
            elif environ.get("wsgi.input_terminated"):  # chunked: read one byte past the limit
                body = environ["wsgi.input"].read(max_bytes + 1)
            else:
                body = b""
        except Exception as exc:
            # WSGI servers report broken chunked framing with their own exceptions (gunicorn's
            # InvalidChunkSize, werkzeug's ClientDisconnected): either way the body is unusable.
            raise Refused(
                400, f"the request body could not be read: {exc}; send the whole body again"
            ) from None
        if declared is None and len(body) > max_bytes:
            raise Refused(413, TOO_LARGE)
        if declared is not None and len(body) != int(declared):
            raise Refused(
                400,
                f"the body ended after {len(body)} of the {declared} bytes in Content-Length;"
                " send the whole body again",
            )
        return body

    def _reject(
        self, environ: dict[str, Any], call: _Call, body: bytes, status: int, reason: str
    ) -> None:
        """Keep an authenticated body that failed transport validation, then refuse it."""
        try:
            kept = {"body": body.decode("utf-8")}
        except UnicodeDecodeError:
            kept = {"body_base64": base64.b64encode(body).decode()}
        line = envelope(
            environ,
            call.request_id,
            call.received_at,
            call.topic,
            body,
            reason=reason,
            status=status,
            **kept,
        )
        self._land(f"{REJECTED_PREFIX}/{call.topic}", line, call)
        raise Refused(status, reason)

    def _land(self, prefix: str, line: bytes, call: _Call) -> None:
        try:
            self.receiver.land(prefix, line, call.started)
        except LandingError as exc:
            raise Refused(503, f"landing store unavailable, retry later: {exc}") from None


def _query_token(environ: dict[str, Any]) -> str | None:
    """The first ``token`` query parameter, when there is one."""
    query = environ.get("QUERY_STRING", "")
    if "token" not in query:
        return None
    return next((v for k, v in parse_qsl(query, keep_blank_values=True) if k == "token"), None)
