"""The webhook hot path: accepted webhooks answered by a small WSGI callable in front of Flask.

Nearly every request the receiver gets is a webhook that passes every check, and a durable
ack is the product's throughput bar. For those, Flask's machinery (request context, routing,
``Request``/``Response`` objects, hooks) cost about as much CPU as landing the event, so
``WebhookHotPath`` answers them itself: it reads the token, content type and length straight from
the WSGI environ, reads the body once, checks it is a JSON object, lands the envelope and
answers 202, with the same core as the Flask route (``connector.ingest``: envelope, landing,
log line, metrics).

It only ever answers "accepted" or, when the landing store fails, 503. Whatever it cannot
positively accept (a wrong or missing token, a signature that does not verify, HTTPS required
but absent, a non-JSON content type, a missing, oversized or chunked length, a short body,
a body that is not a JSON object) goes to the Flask app unchanged; a body already read is
handed on as it was read, so the Flask route answers and keeps it exactly as it would have.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

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
from core.landing import LandingError
from core.settings import TOPICS

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

WEBHOOK_PREFIX = "/webhooks/flavours/"


class _EnvironHeaders:
    """``get`` of a request header by name, for ``check_signature``, straight from the environ."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"), default)


class _UnreadableBody(io.RawIOBase):
    """Stands in for a body whose reading failed: the Flask route reads the same error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise self.error


class WebhookHotPath:
    """WSGI middleware answering accepted ``POST /webhooks/flavours/<topic>`` without Flask."""

    def __init__(self, app: WsgiApp, receiver: Receiver) -> None:
        self.app = app
        self.receiver = receiver
        self.routes = {WEBHOOK_PREFIX + topic: topic for topic in TOPICS}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        topic = self.routes.get(environ.get("PATH_INFO", ""))
        if (
            topic is None
            or environ.get("REQUEST_METHOD") != "POST"
            or not self._admissible(environ)
        ):
            return self.app(environ, start_response)
        started = time.perf_counter()
        request_id = new_request_id()
        received_at = received_at_now()
        length = int(environ["CONTENT_LENGTH"])
        try:
            body = environ["wsgi.input"].read(length)
        except Exception as exc:
            environ["wsgi.input"] = _UnreadableBody(exc)
            return self.app(environ, start_response)
        if len(body) != length or not self._authentic(environ, body):
            return self._hand_on(environ, start_response, body)
        try:
            text, event = parse_json_object(body)
        except ValueError:
            return self._hand_on(environ, start_response, body)

        xid, action = event_ids(event)
        line = envelope(environ, request_id, received_at, topic, body, payload_json=text)
        error = None
        try:
            self.receiver.land(topic, line, started)
        except LandingError as exc:
            error = f"landing store unavailable, retry later: {exc}"
        if error is None:
            status, payload = "202 ACCEPTED", accepted_answer(request_id)
        else:
            status, payload = "503 SERVICE UNAVAILABLE", error_answer(request_id, error)
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("X-Request-Id", request_id),
            ],
        )
        record_request(
            request_id=request_id,
            topic=topic,
            status=int(status[:3]),
            started=started,
            source_ip=environ.get("REMOTE_ADDR"),
            xid=xid,
            action=action,
            body_bytes=len(body),
            error=error,
        )
        return [payload]

    def _admissible(self, environ: dict[str, Any]) -> bool:
        """Everything that can be checked before reading the body says "accept"."""
        settings = self.receiver.settings
        if settings.require_https and environ.get("wsgi.url_scheme") != "https":
            return False
        if "HTTP_TRANSFER_ENCODING" in environ:
            return False
        declared = environ.get("CONTENT_LENGTH", "")
        if (
            not (declared.isascii() and declared.isdigit())
            or not 0 < int(declared) <= settings.max_body_bytes
        ):
            return False
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if not is_json_mimetype(mimetype):
            return False
        if self.receiver.token is None:
            return True
        header = _EnvironHeaders(environ).get(TOKEN_HEADER)
        query = None
        if header is None and "token" in environ.get("QUERY_STRING", ""):
            query = next(
                (
                    v
                    for k, v in parse_qsl(environ["QUERY_STRING"], keep_blank_values=True)
                    if k == "token"
                ),
                None,
            )
        try:
            check_token(self.receiver.token, query, header)
        except AuthError:
            return False
        return True

    def _authentic(self, environ: dict[str, Any], body: bytes) -> bool:
        if self.receiver.hmac_key is None:
            return True
        try:
            check_signature(self.receiver.hmac_key, _EnvironHeaders(environ), body)
        except AuthError:
            return False
        return True

    def _hand_on(self, environ: dict[str, Any], start_response: Callable[..., Any], body: bytes):
        """Let the Flask app answer, reading the body this path already read."""
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)
