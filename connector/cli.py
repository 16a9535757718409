"""The ``flavours`` command line: serve, load, send, demo.

Settings come from ``FLAVOURS_*`` variables (and ``.env``); options here override a few of them.
"""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from connector.settings import Settings


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, or a clear message and exit code 2 when one is invalid."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"FLAVOURS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"invalid settings: {problems}") from None


@click.group()
@click.version_option(package_name="flavours-connector")
def main() -> None:
    """Flavours customer connector: receive webhooks, load them, build the customer history."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Processes.")
@click.option(
    "--threads", default=16, show_default=True, type=click.IntRange(1), help="Threads per worker."
)
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS private key.")
@click.option(
    "--insecure", is_flag=True, help="Allow running without FLAVOURS_WEBHOOK_TOKEN (local only)."
)
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    certfile: str | None,
    keyfile: str | None,
    insecure: bool,
) -> None:
    """Run the webhook receiver under gunicorn."""
    from connector.server import run_server

    settings = load_settings()
    if settings.webhook_token is None and not insecure:
        raise click.UsageError(
            "FLAVOURS_WEBHOOK_TOKEN is not set: anyone could post customer data. Set a long "
            "random token (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) "
            "and give Flavours the URL with ?token=..., or pass --insecure for local testing."
        )
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together")
    click.echo(
        f"flavours receiver on {'https' if certfile else 'http'}://{host}:{port} "
        f"landing in {settings.landing_url}",
        err=True,
    )
    run_server(
        settings,
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        certfile=certfile,
        keyfile=keyfile,
    )


if __name__ == "__main__":
    sys.exit(main())
