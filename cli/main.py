"""The ``flavours`` command line: serve, load, backfill, actions, dashboard, sql, send, demo, dev,
fake-api.

Settings come from ``FLAVOURS_*`` variables (and ``.env``); options here override a few of them.
"""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from core.settings import Settings


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


@main.command()
@click.option(
    "--full-refresh", is_flag=True, help="Rebuild staging and analytics from raw (raw is kept)."
)
def load(full_refresh: bool) -> None:
    """Load new landed objects and update the customer models, once, in process."""
    from pipelines.run import failure_reason, one_shot_collector, run_load
    from warehouse.lake import Lake, WarehouseError

    settings = load_settings()
    try:
        target = Lake.of(settings).describe()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"loading {settings.landing_url} into {target}", err=True)
    with one_shot_collector():
        try:
            _, summary = run_load(settings, full_refresh=full_refresh)
        except Exception as exc:
            # Dagster's log above has the failed step and its stack trace
            raise click.ClickException(
                f"load failed: {failure_reason(exc)}. Re-running is safe once the cause is fixed."
            ) from exc
        for line in summary.lines():
            click.echo(line)
    if summary.checks_failed:
        raise SystemExit(1)


@main.command()
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Only customers updated at or after this UTC date (the API has no such filter: every "
    "page is still read).",
)
@click.option("--per-page", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--restart", is_flag=True, help="Start from page 1 even if a backfill was cut off.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def backfill(since, per_page: int, restart: bool, progress: bool) -> None:
    """Land every customer of the Flavours Customers API as a snapshot (then `flavours load`)."""
    from datetime import UTC

    from tqdm import tqdm

    from pipelines.backfill import BackfillError
    from pipelines.backfill import backfill as run_backfill

    settings = load_settings()
    click.echo(
        f"backfilling customers from {settings.api_url} into {settings.landing_url}", err=True
    )
    with tqdm(unit=" pages", disable=not progress, leave=True) as bar:

        def advance(page: int, customers: int) -> None:
            bar.update(1)
            bar.set_postfix(page=page, customers=customers)

        try:
            result = run_backfill(
                settings,
                since=since.replace(tzinfo=UTC) if since else None,
                per_page=per_page,
                restart=restart,
                on_page=advance,
            )
        except BackfillError as exc:
            raise click.ClickException(str(exc)) from None
    resumed = f", resumed at page {result.resumed_from_page}" if result.resumed_from_page else ""
    click.echo(
        f"backfill {result.run_id}: {result.pages} pages, {result.customers} customers landed"
        f"{resumed}"
        + (f", {result.skipped_before_since} not updated since {since:%Y-%m-%d}" if since else "")
    )
    for name, count in sorted(result.unexpected_fields.items()):
        click.echo(f"unmapped field from the API: {name} ({count} customers)", err=True)
    if result.unusable_items:
        click.echo(
            f"{result.unusable_items} items had no usable customer id: landed, and kept by the "
            "load in raw.customer_events_rejected with the reason",
            err=True,
        )
    click.echo("run `flavours load` to add them to the customer dimension", err=True)


@main.group()
def actions() -> None:
    """The outbox of actions on customer events (FLAVOURS_ACTIONS_FILE): list, retry, dispatch."""


@actions.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "failed", "sent", "dead", "skipped", "all"]),
    help="Only rows of this status (default: all but skipped).",
)
@click.option("--rule", help="Only rows of this rule.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1))
@click.option("--csv", "as_csv", is_flag=True, help="Every matching row as CSV.")
def actions_list(status: str | None, rule: str | None, limit: int, as_csv: bool) -> None:
    """Show the newest actions and the count of each status (as readers see the warehouse)."""
    from pipelines.actions.outbox import has_outbox
    from warehouse.lake import WarehouseError, connect_reader

    try:
        with connect_reader(load_settings()) as con:
            if not has_outbox(con):
                click.echo("no actions yet (is FLAVOURS_ACTIONS_FILE set, and has a load run?)")
                return
            params = {"status": status, "rule": rule, "limit": None if as_csv else limit}
            if not as_csv:
                totals = con.execute(
                    "select status, count(*) from ops.customer_actions group by all order by 1"
                ).fetchall()
                click.echo(", ".join(f"{name} {count:,}" for name, count in totals))
            rows = con.sql(
                """
                select action_id, rule, event, customer_id, version, status, attempts,
                    last_error, skip_reason, updated_at
                from ops.customer_actions
                where ($status = 'all' or status = coalesce($status, status))
                    and ($status is not null or status <> 'skipped')
                    and rule = coalesce($rule, rule)
                order by updated_at desc, action_id
                limit $limit
                """,
                params=params,
            )
            _print_relation(rows, as_csv, limit)
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None


@actions.command("retry")
@click.argument("action_ids", nargs=-1)
@click.option("--rule", help="Only the dead actions of this rule.")
@click.option("--all", "everything", is_flag=True, help="Every dead action.")
def actions_retry(action_ids: tuple[str, ...], rule: str | None, everything: bool) -> None:
    """Make dead actions pending again (the next dispatch sends them): ACTION_IDS, --rule or
    --all."""
    from pipelines.actions.outbox import retry

    if not (action_ids or rule or everything):
        raise click.UsageError("name ACTION_IDS, a --rule, or --all")
    count = retry(load_settings(), rule=rule, action_ids=list(action_ids) or None)
    click.echo(f"{count} dead actions are pending again; they go out with the next dispatch")


@actions.command("dispatch")
def actions_dispatch() -> None:
    """Plan the dimension's new versions and send what is due now (as each load does)."""
    from pipelines.actions.outbox import dispatch
    from pipelines.actions.rules import RulesFileError

    try:
        report = dispatch(load_settings())
    except RulesFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.line())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8501, show_default=True, type=int, help="Port to listen on.")
def dashboard(host: str, port: int) -> None:
    """Serve the customer dashboard (charts, breakdowns, one customer's timeline, freshness)."""
    from dashboard.server import run_dashboard

    settings = load_settings()
    click.echo(f"dashboard on http://{host}:{port}/ over {settings.warehouse}", err=True)
    run_dashboard(settings, host=host, port=port)


@main.command("fake-api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8010, show_default=True, type=int)
@click.option("--customers", default=50, show_default=True, type=click.IntRange(0))
@click.option("--token", default="fake-api-token", show_default=True)
def fake_api(host: str, port: int, customers: int, token: str) -> None:
    """Serve a stand-in for the Flavours Customers API (the documented shape) to try backfill."""
    from werkzeug.serving import run_simple

    from pipelines.fake_api import FakeCustomersApi

    click.echo(
        f"FLAVOURS_API_URL=http://{host}:{port} FLAVOURS_API_TOKEN={token} flavours backfill",
        err=True,
    )
    run_simple(host, port, FakeCustomersApi(customers=customers, token=token).app())


@main.command()
@click.argument("url")
@click.option("--customers", default=100, show_default=True, type=click.IntRange(1))
@click.option("--events", default=1000, show_default=True, type=click.IntRange(0))
@click.option("--rate", default=0.0, show_default=True, help="Deliveries per second (0: max).")
@click.option(
    "--duplicates",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of events delivered a second time (same xid).",
)
@click.option("--shuffle", is_flag=True, help="Deliver out of event-time order.")
@click.option(
    "--example/--no-example",
    default=True,
    show_default=True,
    help="Send the documented customers.CREATE example first.",
)
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1))
@click.option("--retries", default=5, show_default=True, type=click.IntRange(0))
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, help="Seconds per try.")
@click.option("--token", envvar="FLAVOURS_WEBHOOK_TOKEN", help="Appended as ?token= when set.")
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same events).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def send(
    url: str,
    customers: int,
    events: int,
    rate: float,
    duplicates: float,
    shuffle: bool,
    example: bool,
    concurrency: int,
    retries: int,
    timeout_s: float,
    token: str | None,
    seed: int,
    progress: bool,
) -> None:
    """Send synthetic Flavours customer events to URL, retrying like Flavours."""
    from cli.sending import (
        delivery_order,
        documented_example,
        progress_bar,
        send_events,
        synthetic_events,
    )

    url = _with_token(url, token)
    stream = synthetic_events(customers, events, seed=seed)
    deliveries = ([documented_example()] if example else []) + delivery_order(
        stream, duplicates=duplicates, shuffle=shuffle, seed=seed
    )
    with progress_bar(len(deliveries), progress) as advance:
        report = send_events(
            url,
            deliveries,
            rate=rate,
            concurrency=concurrency,
            retries=retries,
            timeout_s=timeout_s,
            on_done=advance,
        )
    statuses = ", ".join(
        f"{code or 'no answer'}: {n}" for code, n in sorted(report.statuses.items())
    )
    click.echo(
        f"acked {report.acked} of {len(deliveries)} deliveries, failed {report.failed}, "
        f"{report.attempts} attempts in {report.seconds:.1f} s "
        f"({len(deliveries) / max(report.seconds, 1e-9):.0f}/s); answers: {statuses}"
    )
    if report.failed:
        raise SystemExit(1)


@main.command()
@click.option("--customers", default=200, show_default=True, type=click.IntRange(1))
@click.option("--events", default=2000, show_default=True, type=click.IntRange(1))
def demo(customers: int, events: int) -> None:
    """Receive sample events through a real receiver, load them, show the customer history."""
    from cli.devtools import run_demo

    run_demo(load_settings(), customers=customers, events=events, echo=click.echo)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--insecure",
    is_flag=True,
    help="No token at all (default: FLAVOURS_WEBHOOK_TOKEN or a new one).",
)
@click.option("--dagster-port", default=3000, show_default=True, type=int, help="Dagster UI port.")
@click.option(
    "--dashboard-port", default=8501, show_default=True, type=int, help="Dashboard port (0: none)."
)
def dev(host: str, port: int, insecure: bool, dagster_port: int, dashboard_port: int) -> None:
    """Run the receiver, `dagster dev` and the dashboard together; Ctrl-C stops them all."""
    from cli.devtools import run_dev

    settings = load_settings()
    raise SystemExit(
        run_dev(
            settings,
            host,
            port,
            insecure,
            dagster_port,
            echo=click.echo,
            dashboard_port=dashboard_port or None,
        )
    )


@main.command()
@click.argument("query", required=False)
@click.option("--csv", "as_csv", is_flag=True, help="Every row as CSV (with a header) instead.")
@click.option(
    "--max-rows",
    default=40,
    show_default=True,
    type=click.IntRange(1),
    help="Rows the table shows (the CSV has them all).",
)
@click.option(
    "--duckdb-cli",
    is_flag=True,
    help="Print the statements that open the same read-only view in the DuckDB CLI.",
)
def sql(query: str | None, as_csv: bool, max_rows: int, duckdb_cli: bool) -> None:
    """Run a read-only QUERY on the warehouse's last published state and print the result.

    ``analytics.*``, ``staging.*`` and ``raw.*`` are there by those names; QUERY ``-`` reads it
    from standard input. Never blocks or disturbs a load.
    """
    import duckdb

    from warehouse.lake import WarehouseError, connect_reader, reader_statements

    settings = load_settings()
    if duckdb_cli:
        try:
            click.echo(";\n".join(reader_statements(settings)) + ";")
        except WarehouseError as exc:
            raise click.ClickException(str(exc)) from None
        return
    if query is None:
        raise click.UsageError("give a QUERY (or - to read it from standard input)")
    if query == "-":
        query = sys.stdin.read()
    try:
        with connect_reader(settings) as con:
            relation = con.sql(query)
            if relation is None:
                return
            _print_relation(relation, as_csv, max_rows)
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    except duckdb.Error as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def _print_relation(relation, as_csv: bool, max_rows: int) -> None:
    """Every row of ``relation`` as CSV, or its first ``max_rows`` as a terminal-wide table."""
    if as_csv:
        _write_csv(relation)
    else:
        relation.show(max_rows=max_rows, max_width=_terminal_width())


def _write_csv(relation) -> None:
    """Stream ``relation`` to standard output as CSV, batch by batch."""
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(relation.columns)
    while batch := relation.fetchmany(10_000):
        writer.writerows(batch)


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((160, 40)).columns


def _with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` added unless it already carries one."""
    from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

    if not token:
        return url
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if "token" in query:
        return url
    query["token"] = [token]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


if __name__ == "__main__":
    sys.exit(main())
