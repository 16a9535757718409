"""Webhook and health routes of the receiver.

A webhook is answered ``202`` only once its envelope is durable in the landing store. The
receiver validates transport only (authentication, size, content type, "is a JSON object");
schema validation is the pipeline's job, so a schema change at Flavours never loses events.
Authenticated bodies that fail transport validation are kept under ``_rejected/`` with the
reason. Reads: every setting of ``connector.settings.Settings`` except the pipeline ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from connector import metrics
from connector.auth import TOKEN_HEADER, AuthError, check_signature, check_token, signing_key
from connector.batching import GroupCommitWriter
from connector.landing import REJECTED_PREFIX, LandingError, LandingStore
from connector.proxies import TrustedProxyMiddleware
from connector.settings import TOPICS, Settings

log = logging.getLogger("connector.requests")

ENVELOPE_VERSION = 1
SECRET_HEADERS = {TOKEN_HEADER.lower(), "authorization", "proxy-authorization", "cookie"}

bp = Blueprint("webhooks", __name__)


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

    def land(self, topic: str, line: bytes, started: float) -> str:
        """Land one envelope line; returns the object key, raises ``LandingError`` (→ 503)."""
        future = self.writer.submit(topic, line)
        remaining = self.settings.landing_timeout_s - (time.perf_counter() - started)
        try:
            return future.result(timeout=max(remaining, 0.001))
        except FutureTimeout:
            raise LandingError(
                f"landing store did not confirm within {self.settings.landing_timeout_s:g} s"
            ) from None

    def ready(self) -> str | None:
        """``None`` when the landing store takes a write within the timeout, else why not."""
        future = self._prober.submit(self.store.check_writable)
        try:
            future.result(timeout=self.settings.landing_timeout_s)
        except FutureTimeout:
            return f"landing store did not answer within {self.settings.landing_timeout_s:g} s"
        except LandingError as exc:
            return str(exc)
        return None


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the receiver to ``app``: routes, error handlers, proxies, request logging."""
    app.extensions["flavours_receiver"] = Receiver(settings)
    app.wsgi_app = TrustedProxyMiddleware(app.wsgi_app, settings.trusted_proxies)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.before_request(_start_request)
    app.after_request(_finish_request)


def _receiver() -> Receiver:
    return current_app.extensions["flavours_receiver"]


# -- webhooks ------------------------------------------------------------------------------------


@bp.post("/webhooks/flavours/<any(" + ", ".join(TOPICS) + "):topic>")
def receive_webhook(topic: str) -> Response | tuple[Response, int]:
    """Authenticate, validate transport, land durably, then acknowledge with 202."""
    receiver = _receiver()
    settings = receiver.settings
    g.topic = topic
    if settings.require_https and request.scheme != "https":
        return _error(403, "HTTPS is required: send webhooks to the https:// URL")
    try:
        if receiver.token is not None:
            check_token(
                receiver.token, request.args.get("token"), request.headers.get(TOKEN_HEADER)
            )
        body = _read_body(settings.max_body_bytes)
        if receiver.hmac_key is not None:
            check_signature(receiver.hmac_key, request.headers, body)
    except AuthError as exc:
        return _error(401, f"unauthenticated: {exc}")
    except IncompleteBody as exc:
        return _error(400, f"{exc}; send the whole body again")

    g.body_bytes = len(body)
    if not request.mimetype or not (
        request.mimetype == "application/json" or request.mimetype.endswith("+json")
    ):
        return _reject(
            topic,
            body,
            415,
            f"content type must be application/json, got {request.mimetype or 'none'!r}",
        )
    try:
        text, event = _parse_json_object(body)
    except ValueError as exc:
        return _reject(topic, body, 400, str(exc))
    g.xid, g.action = (
        v if isinstance(v, str) else None for v in (event.get("xid"), event.get("action"))
    )
    line = _envelope(topic, body, payload_json=text)
    try:
        receiver.land(topic, line, g.started)
    except LandingError as exc:
        return _error(503, f"landing store unavailable, retry later: {exc}")
    # The hot path: a fixed body, no JSON provider round trip (request ids are plain UUIDs).
    return Response(
        f'{{"status":"accepted","request_id":"{g.request_id}"}}\n',
        status=202,
        mimetype="application/json",
    )


class IncompleteBody(Exception):
    """The request body could not be read whole: broken chunked framing or a cut connection."""


def _read_body(max_bytes: int) -> bytes:
    """The whole body; 413 above ``max_bytes``, ``IncompleteBody`` when it is cut or garbled."""
    declared = request.content_length
    try:
        body = request.get_data(cache=False)  # 413 when Content-Length is above the limit
        # A chunked body is cut at the limit without an error: a byte beyond it means too large.
        if declared is None and len(body) >= max_bytes and request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    except RequestEntityTooLarge:
        raise
    except Exception as exc:
        # WSGI servers report broken chunked framing with their own exceptions (gunicorn's
        # InvalidChunkSize, werkzeug's ClientDisconnected): either way the body is unusable.
        raise IncompleteBody(f"the request body could not be read: {exc}") from None
    if declared is not None and len(body) != declared:
        raise IncompleteBody(
            f"the body ended after {len(body)} of the {declared} bytes in Content-Length"
        )
    return body


def _parse_json_object(body: bytes) -> tuple[str, dict[str, Any]]:
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


def _envelope(topic: str, raw: bytes, payload_json: str | None = None, **extra: Any) -> bytes:
    """One landing line: the documented envelope, with the payload spliced in as received."""
    head = {
        "v": ENVELOPE_VERSION,
        "topic": topic,
        "received_at": g.received_at,
        "request_id": g.request_id,
        "source_ip": request.remote_addr,
        "headers": {k.lower(): v for k, v in request.headers if k.lower() not in SECRET_HEADERS},
        "body_sha256": hashlib.sha256(raw).hexdigest(),
        **extra,
    }
    text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
    if payload_json is not None:
        text = f'{text[:-1]},"payload":{payload_json}}}'
    return text.encode("utf-8")


def _reject(topic: str, body: bytes, status: int, reason: str) -> tuple[Response, int]:
    """Keep an authenticated body that failed transport validation, then answer ``status``."""
    try:
        kept = {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        kept = {"body_base64": base64.b64encode(body).decode()}
    line = _envelope(topic, body, reason=reason, status=status, **kept)
    try:
        _receiver().land(f"{REJECTED_PREFIX}/{topic}", line, g.started)
    except LandingError as exc:
        return _error(503, f"landing store unavailable, retry later: {exc}")
    return _error(status, reason)


# -- health --------------------------------------------------------------------------------------


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The landing store is writable (503 otherwise), so load balancers can route around."""
    problem = _receiver().ready()
    if problem:
        return jsonify(status="unavailable", error=problem), 503
    return jsonify(status="ready"), 200


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text exposition."""
    data, content_type = metrics.render()
    return Response(data, content_type=content_type)


# -- request lifecycle ---------------------------------------------------------------------------


_ids = random.Random()  # noqa: S311 - ids for tracing; seeded from os.urandom, reseeded per fork
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A random version-4 UUID for tracing; it needs to be unique, not unpredictable.

    ``uuid.uuid4()`` reads the kernel's random source on every call, which measured 0.14 ms per
    request here: a tenth of a webhook's whole CPU budget.
    """
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


def _start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = new_request_id()
    g.received_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    g.topic = None


def _finish_request(response: Response) -> Response:
    """One structured log line and the metrics for every webhook request."""
    if not request.path.startswith("/webhooks/"):
        return response
    latency = time.perf_counter() - g.started
    topic = g.get("topic") or "unknown"
    metrics.REQUESTS.labels(topic=topic, status=str(response.status_code)).inc()
    metrics.ACK_LATENCY.labels(topic=topic).observe(latency)
    response.headers["X-Request-Id"] = g.request_id
    log.info(
        "webhook",
        extra={
            "request_id": g.request_id,
            "topic": topic,
            "xid": g.get("xid"),
            "action": g.get("action"),
            "status": response.status_code,
            "latency_ms": round(latency * 1000, 2),
            "bytes": g.get("body_bytes"),
            "source_ip": request.remote_addr,
            "error": g.get("error"),
        },
    )
    return response


def _error(status: int, message: str) -> tuple[Response, int]:
    g.error = message
    return jsonify(status="error", error=message, request_id=g.get("request_id")), status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    """Framework errors (404, 405, 413, ...) as JSON bodies that say what was wrong."""
    messages = {
        404: "no such endpoint: webhooks go to /webhooks/flavours/<topic> with topic one of "
        + ", ".join(TOPICS),
        405: f"method {request.method} is not allowed here",
        413: "body is larger than FLAVOURS_MAX_BODY_BYTES",
    }
    return _error(exc.code or 500, messages.get(exc.code or 500, exc.description or exc.name))
