"""Webhook and health routes of the receiver (Flask).

A webhook is answered ``202`` only once its envelope is durable in the landing store. The
receiver validates transport only (authentication, size, content type, "is a JSON object");
schema validation is the pipeline's job, so a schema change at Flavours never loses events.
Authenticated bodies that fail transport validation are kept under ``_rejected/`` with the
reason. Webhooks that pass every check are answered by ``connector.hotpath`` in front of Flask;
these routes answer every other request, with the same core (``connector.ingest``).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from connector import metrics
from connector.auth import TOKEN_HEADER, AuthError, check_signature, check_token
from connector.hotpath import WebhookHotPath
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
from connector.proxies import TrustedProxyMiddleware
from core.landing import REJECTED_PREFIX, LandingError
from core.settings import TOPICS, Settings

bp = Blueprint("webhooks", __name__)


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the receiver to ``app``: routes, error handlers, proxies, request logging."""
    receiver = Receiver(settings)
    app.extensions["flavours_receiver"] = receiver
    # Proxies first, so both paths see the client's address and scheme.
    app.wsgi_app = TrustedProxyMiddleware(
        WebhookHotPath(app.wsgi_app, receiver), settings.trusted_proxies
    )
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.before_request(_start_request)
    app.after_request(_finish_request)


def _receiver() -> Receiver:
    return current_app.extensions["flavours_receiver"]


# -- webhooks ------------------------------------------------------------------------------------


@bp.post("/webhooks/flavours/<any(" + ", ".join(TOPICS) + "):topic>")
def receive_webhook(topic: str) -> Response:
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
    if not is_json_mimetype(request.mimetype):
        return _reject(
            topic,
            body,
            415,
            f"content type must be application/json, got {request.mimetype or 'none'!r}",
        )
    try:
        text, event = parse_json_object(body)
    except ValueError as exc:
        return _reject(topic, body, 400, str(exc))
    g.xid, g.action = event_ids(event)
    line = _envelope(topic, body, payload_json=text)
    try:
        receiver.land(topic, line, g.started)
    except LandingError as exc:
        return _error(503, f"landing store unavailable, retry later: {exc}")
    return Response(accepted_answer(g.request_id), status=202, mimetype="application/json")


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


def _envelope(topic: str, raw: bytes, payload_json: str | None = None, **extra: Any) -> bytes:
    return envelope(request.environ, g.request_id, g.received_at, topic, raw, payload_json, **extra)


def _reject(topic: str, body: bytes, status: int, reason: str) -> Response:
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


def _start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = new_request_id()
    g.received_at = received_at_now()
    g.topic = None


def _finish_request(response: Response) -> Response:
    """One structured log line and the metrics for every webhook request."""
    if not request.path.startswith("/webhooks/"):
        return response
    response.headers["X-Request-Id"] = g.request_id
    record_request(
        request_id=g.request_id,
        topic=g.get("topic"),
        status=response.status_code,
        started=g.started,
        source_ip=request.remote_addr,
        xid=g.get("xid"),
        action=g.get("action"),
        body_bytes=g.get("body_bytes"),
        error=g.get("error"),
    )
    return response


def _error(status: int, message: str) -> Response:
    g.error = message
    return Response(
        error_answer(g.get("request_id"), message), status=status, mimetype="application/json"
    )


def _http_error(exc: HTTPException) -> Response:
    """Framework errors (404, 405, 413, ...) as JSON bodies that say what was wrong."""
    messages = {
        404: "no such endpoint: webhooks go to /webhooks/flavours/<topic> with topic one of "
        + ", ".join(TOPICS),
        405: f"method {request.method} is not allowed here",
        413: "body is larger than FLAVOURS_MAX_BODY_BYTES",
    }
    return _error(exc.code or 500, messages.get(exc.code or 500, exc.description or exc.name))
