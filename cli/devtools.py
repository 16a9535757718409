"""``flavours demo`` and ``flavours dev``: the product end to end on one machine.

``demo`` starts the receiver on a free loopback port with a generated token, sends the
documented example plus synthetic customers (updates, deletes, re-creations, duplicate and
out-of-order deliveries), stops the receiver, runs the load and prints what happened. The data
stays in ``FLAVOURS_LANDING_URL`` / ``FLAVOURS_WAREHOUSE`` (``./data`` by default).

``dev`` runs the receiver and ``dagster dev`` together until Ctrl-C stops both.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

from core.settings import Settings

BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 15
WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start(argv: Sequence[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start a child in its own process group with default signal handling.

    A child started from a non-interactive shell can inherit SIGINT as ignored (``dagster dev``
    then ignores Ctrl-C and SIGTERM); resetting the handlers makes it stoppable by its handle.
    """

    def reset_signals() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return subprocess.Popen(
        list(argv), env=env, preexec_fn=reset_signals, start_new_session=True, **kwargs
    )


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it does not exit in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def wait_healthy(
    url: str, proc: subprocess.Popen, timeout: float = 30.0, what: str = "receiver"
) -> None:
    """Poll ``url`` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def run_demo(
    settings: Settings,
    *,
    customers: int = 200,
    events: int = 2000,
    echo: Callable[[str], None] = print,
) -> None:
    """Receive sample events through a real receiver, load them, print the results."""
    from cli.sending import delivery_order, documented_example, send_events, synthetic_events
    from pipelines.run import run_load

    token = secrets.token_urlsafe(24)
    port = free_port()
    env = {
        **os.environ,
        "FLAVOURS_WEBHOOK_TOKEN": token,
        "FLAVOURS_LANDING_URL": settings.landing_url,
    }
    log_path = Path(settings.warehouse).parent / "demo-receiver.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    echo(f"1. starting the receiver on 127.0.0.1:{port} (log: {log_path})")
    with log_path.open("ab") as log:
        receiver = start(
            [str(BIN / "flavours"), "serve", "--port", str(port), "--workers", "1"],
            env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", receiver)
        stream = synthetic_events(customers, events)
        deliveries = [
            documented_example(),
            *delivery_order(stream, duplicates=0.05, shuffle=True),
            joining_now(),
        ]
        echo(
            f"2. sending {len(deliveries):,} deliveries: the documented example, {events:,} "
            f"events of {customers:,} customers (shuffled, 5 % delivered twice) and a customer "
            "who joins right now"
        )
        url = f"http://127.0.0.1:{port}/webhooks/flavours/customers?token={token}"
        report = send_events(url, deliveries, concurrency=16)
        echo(f"   acked {report.acked:,}, failed {report.failed:,} in {report.seconds:.1f} s")
        bad = requests.post(
            url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10
        )
        echo(f"   a malformed body was answered {bad.status_code} and kept under _rejected/")
    finally:
        stop(receiver)
    with DemoMailbox() as mailbox:
        actions = mailbox.settings(settings, Path(settings.warehouse).parent / "demo-actions.yaml")
        echo(
            f"3. loading {settings.landing_url} into {settings.warehouse}, with the welcome "
            f"e-mail rule of {actions.actions_file} and an SMTP sink on 127.0.0.1:{mailbox.port}"
        )
        _, summary = run_load(actions)
    for line in summary.lines():
        echo(f"   {line}")
    show_results(settings, echo)
    echo(
        f"6. e-mails the SMTP sink received: {len(mailbox.messages)} (older versions are "
        "skipped by the rule's max_age of 24 h: only the customer who joined now is welcomed)"
    )
    for message in mailbox.messages[:1]:
        echo(textwrap.indent(message.as_string().strip(), "   | ", lambda line: True))
    echo(NEXT_STEPS)


NEXT_STEPS = (
    "Explore the tables: .venv/bin/flavours sql 'from analytics.dim_customer limit 10' "
    "(or, in Python, `from warehouse import connect_reader`).\n"
    "See the charts and one customer's history: .venv/bin/flavours dashboard "
    "(http://127.0.0.1:8501).\n"
    "See the runs, the asset graph and the checks: make serve (Dagster UI on :3000).\n"
    "Import pre-existing customers from the Customers API (a stand-in on loopback): "
    ".venv/bin/flavours fake-api & then FLAVOURS_API_URL=http://127.0.0.1:8010 "
    "FLAVOURS_API_TOKEN=fake-api-token .venv/bin/flavours backfill && .venv/bin/flavours load"
)

DEMO_RULES = """\
# The demo's actions (FLAVOURS_ACTIONS_FILE): a welcome e-mail for each new customer.
rules:
  - name: welcome
    on: created
    max_age: 24h
    do: email
    email:
      subject: "Welcome to Flavours, {{ name }}"
      body: |
        Hello {{ name }},

        thank you for joining us{% if city %} in {{ city }}{% endif %}. Your first coffee is on us.
      languages:
        ar:
          subject: "أهلاً بك يا {{ name }}"
          body: "شكراً لانضمامك إلينا. قهوتك الأولى علينا."
"""


def joining_now() -> dict:
    """A new customer's CREATE stamped now (the demo's other events are from 2025)."""
    from cli.sending import documented_example

    event = documented_example()
    customer_id = str(uuid.uuid4())
    event["xid"] = str(uuid.uuid4())
    event["timestamp"] = int(time.time() * 1000)
    event["data"]["id"] = customer_id
    event["data"]["user"].update(
        userable_id=customer_id, name="Layla Al-Harbi", email="layla@example.com", lang="en"
    )
    return event


class DemoMailbox:
    """An SMTP sink on a free loopback port (aiosmtpd) that keeps the messages it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list = []

    def settings(self, settings: Settings, rules_path: Path) -> Settings:
        """``settings`` with the demo's rules (written to ``rules_path``) and this sink."""
        rules_path.write_text(DEMO_RULES)
        return settings.model_copy(
            update={
                "actions_file": str(rules_path),
                "smtp_host": "127.0.0.1",
                "smtp_port": self.port,
                "smtp_tls": "none",
                "smtp_from": "Flavours demo <hello@flavours.example>",
            }
        )

    async def handle_DATA(self, server, session, envelope) -> str:
        from email import message_from_bytes, policy

        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"

    def __enter__(self) -> DemoMailbox:
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()


def show_results(settings: Settings, echo: Callable[[str], None]) -> None:
    """Print a few current customers and the daily report from the warehouse."""
    from warehouse import connect_reader

    with connect_reader(settings) as con:
        echo("4. a few current customers (analytics.dim_customer_current)")
        echo(
            str(
                con.sql(
                    "select customer_id[:8] as customer, version, is_deleted, name, city, lang, "
                    "valid_from from analytics.dim_customer_current order by version desc, "
                    "customer_id limit 8"
                )
            )
        )
        echo("5. the last days of analytics.rpt_customer_daily")
        echo(str(con.sql("select * from analytics.rpt_customer_daily order by day desc limit 7")))


def run_dev(
    settings: Settings,
    host: str,
    port: int,
    insecure: bool,
    dagster_port: int,
    echo: Callable[[str], None] = print,
    dashboard_port: int | None = 8501,
) -> int:
    """Run the receiver, ``dagster dev`` and the dashboard until Ctrl-C (or one of them exits).

    Without ``FLAVOURS_WEBHOOK_TOKEN`` (and without ``--insecure``) a token is generated for
    this run and the webhook URL printed, so a local setup is never an open endpoint.

    Ctrl-C (SIGINT) and SIGTERM both stop the children, each in its own process group,
    even when this process inherited SIGINT as ignored (started with ``&`` from a script):
    otherwise a signal would end this process alone and leave them running.
    """
    env = dict(os.environ)
    home = Path(env.setdefault("DAGSTER_HOME", str(Path("data/dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    token = settings.webhook_token.get_secret_value() if settings.webhook_token else None
    if token is None and not insecure:
        token = env["FLAVOURS_WEBHOOK_TOKEN"] = secrets.token_urlsafe(24)
    query = f"?token={token}" if token else ""
    echo(f"webhooks: http://{host}:{port}/webhooks/flavours/customers{query}")
    echo(f"Dagster UI: http://127.0.0.1:{dagster_port}  (Ctrl-C stops everything)")
    if dashboard_port:
        echo(f"dashboard: http://127.0.0.1:{dashboard_port}")
    serve = [str(BIN / "flavours"), "serve", "--host", host, "--port", str(port)]
    dagster = [str(BIN / "dagster"), "dev", "-w", str(WORKSPACE), "-p", str(dagster_port)]
    dashboard = [str(BIN / "flavours"), "dashboard", "--port", str(dashboard_port)]
    children: list[subprocess.Popen] = []
    stopping = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        children.append(start([*serve, *(["--insecure"] if insecure else [])], env))
        children.append(start(dagster, env))
        if dashboard_port:
            children.append(start(dashboard, env))
        while (ended := next((c for c in children if c.poll() is not None), None)) is None:
            time.sleep(0.5)
        echo(
            f"{Path(ended.args[0]).name} {ended.args[1]} exited with code {ended.returncode}; "
            "stopping the others"
        )
    except KeyboardInterrupt:
        ended = None
    finally:
        for sig in stopping:  # a second Ctrl-C must not cut the stopping short
            signal.signal(sig, signal.SIG_IGN)
        for child in children:
            stop(child)
        for sig, handler in stopping.items():
            signal.signal(sig, handler)
    if ended is None:  # stopped by a signal: how the children ended is the stop's doing
        return 0
    return ended.returncode if ended.returncode > 0 else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
