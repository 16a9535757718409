"""WSGI entry point for any WSGI server: ``gunicorn connector.wsgi:app`` (settings from env)."""

from connector import create_app
from core.logs import configure_logging
from core.settings import Settings

settings = Settings()
configure_logging(settings.log_level)
app = create_app(settings)
