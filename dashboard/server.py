"""``flavours dashboard``: the dashboard under gunicorn (one process, threaded)."""

from __future__ import annotations

from connector.server import GunicornApp
from core.settings import Settings


def run_dashboard(settings: Settings, *, host: str, port: int, threads: int = 8) -> None:
    """Serve the dashboard in the foreground until it is stopped (SIGINT/SIGTERM).

    The app is built in the worker, never in gunicorn's master: importing DuckDB starts a
    thread, and a worker forked after it aborts at exit ("terminate called ...", SIGABRT).
    """

    def load():
        from dashboard.app import create_app

        return create_app(settings).server

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 10,
        "loglevel": settings.log_level.lower(),
        "proc_name": "flavours-dashboard",
    }
    GunicornApp(load, options).run()
