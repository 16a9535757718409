"""``flavours dashboard``: the dashboard under gunicorn (one process, threaded)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from connector.settings import Settings


class DashboardServer(BaseApplication):
    """gunicorn application serving ``create_app(settings).server``."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from dashboard.app import create_app

        return create_app(self.settings).server


def run_dashboard(settings: Settings, *, host: str, port: int, threads: int = 8) -> None:
    """Serve the dashboard in the foreground until it is stopped (SIGINT/SIGTERM)."""
    DashboardServer(
        settings,
        {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 60,
            "graceful_timeout": 10,
            "loglevel": settings.log_level.lower(),
            "proc_name": "flavours-dashboard",
        },
    ).run()
