"""``flavours serve``: the receiver under gunicorn with threaded workers.

Each worker process has its own group-commit writer. Prometheus samples of all workers are
aggregated through a private ``PROMETHEUS_MULTIPROC_DIR`` created for this server. gunicorn's
access log stays off: the receiver writes its own JSON request log, which never holds a token.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar

from gunicorn.app.base import BaseApplication

from core.settings import Settings


class GunicornApp(BaseApplication):
    """gunicorn serving the WSGI app ``load()`` returns in each worker, with ``options`` (gunicorn
    settings by name; None values are left at gunicorn's default).

    gunicorn's control socket is off: its default path is one per user, so the receiver and
    the dashboard would take it from each other, and its thread would run in the master that
    forks replacement workers. The servers are managed by signals (SIGTERM, SIGHUP, TTIN/TTOU).
    gunicorn believes no forwarded headers (its default believes them from loopback): only
    ``FLAVOURS_TRUSTED_PROXIES`` decides (``connector.proxies``).
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "control_socket_disable": True,
        "forwarded_allow_ips": "",
    }

    def __init__(self, load: Callable[[], Any], options: dict[str, Any]) -> None:
        self._load = load
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in {**self.DEFAULTS, **self.options}.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load()


def _receiver_app(settings: Settings, threads: int) -> Any:
    from connector import create_app
    from core.logs import configure_logging

    # gunicorn calls this in each worker after forking, so a background log writer is safe.
    configure_logging(settings.log_level, background=True)
    app = create_app(settings)
    app.extensions["flavours_receiver"].writer.request_threads = threads
    return app


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def run_server(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Run gunicorn in the foreground until it is stopped (SIGINT/SIGTERM)."""
    metrics_dir = tempfile.mkdtemp(prefix="flavours-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # Flavours waits 10 s; a request never needs longer than the landing timeout.
        "timeout": 30,
        "graceful_timeout": 15,
        "keepalive": 5,
        "certfile": certfile,
        "keyfile": keyfile,
        "loglevel": settings.log_level.lower(),
        "proc_name": "flavours-receiver",
        "child_exit": _child_exit,
    }
    master = os.getpid()
    try:
        GunicornApp(lambda: _receiver_app(settings, threads), options).run()
    finally:
        # A worker is forked inside run() and its exit unwinds through here too: only the
        # master removes the folder, or the workers that replace it could not start.
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
