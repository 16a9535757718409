"""The receiver's Flask routes: health, readiness and metrics (webhooks are ``connector.webhooks``).

Errors on these paths (an unknown path, a wrong method) are JSON bodies that say what was
wrong, like the webhook endpoint's.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from connector import metrics
from connector.ingest import Receiver, error_answer
from connector.proxies import TrustedProxyMiddleware
from connector.webhooks import NOT_FOUND, WebhookEndpoint
from core.settings import Settings

bp = Blueprint("health", __name__)


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the receiver to ``app``: the webhook endpoint, these routes, trusted proxies."""
    receiver = Receiver(settings)
    app.extensions["flavours_receiver"] = receiver
    # Proxies first, so the endpoint and the routes see the client's address and scheme.
    app.wsgi_app = TrustedProxyMiddleware(
        WebhookEndpoint(app.wsgi_app, receiver), settings.trusted_proxies
    )
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The landing store is writable (503 otherwise), so load balancers can route around."""
    receiver: Receiver = current_app.extensions["flavours_receiver"]
    problem = receiver.ready()
    if problem:
        return jsonify(status="unavailable", error=problem), 503
    return jsonify(status="ready"), 200


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text exposition."""
    data, content_type = metrics.render()
    return Response(data, content_type=content_type)


def _http_error(exc: HTTPException) -> Response:
    """Framework errors (404, 405, ...) as JSON bodies that say what was wrong."""
    status = exc.code or 500
    messages = {404: NOT_FOUND, 405: f"method {request.method} is not allowed here"}
    message = messages.get(status, exc.description or exc.name)
    return Response(error_answer(None, message), status=status, mimetype="application/json")
