"""The Flavours webhook receiver: a Flask app that lands every event durably before its 2xx.

``create_app(config=None)`` builds the app from a ``Settings`` object (or a mapping of setting
overrides, or the ``FLAVOURS_*`` environment when ``None``). Nothing is created at import time.
Routes: ``POST /webhooks/flavours/<topic>``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the receiver app; ``config`` is a ``Settings``, overrides for one, or ``None``."""
    # Flask is imported here, not with the package: the loader and the CLI import
    # core.settings and need no web framework (its import would slow every `flavours load`).
    from flask import Flask

    from connector import health

    settings = config if isinstance(config, Settings) else Settings(**dict(config or {}))
    app = Flask(__name__)
    app.extensions["flavours_settings"] = settings
    health.init_app(app, settings)
    return app


__all__ = ["Settings", "create_app"]
