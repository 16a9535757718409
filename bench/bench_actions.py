"""Benchmark (``make bench-actions``): welcome e-mails to 10,000 new customers through the outbox.

``--customers`` new customers (CREATE now) are landed and loaded, and an SMTP server (aiosmtpd,
in its own process, counting what it receives) listens on loopback. In one run:

1. baseline: ``smtplib`` alone sends as many messages, one after another on one connection;
2. ``dispatch`` of a welcome rule (plan the versions, send in batches, record each batch's
   outcomes in the warehouse) at ``FLAVOURS_ACTIONS_CONCURRENCY`` 1 and at the default 4, each
   on a fresh outbox.

Printed: messages per second of each, and the ratio of each dispatch to the baseline. Not a
DESIGN target (issue: the dispatch throughput for 10,000 new customers). Everything started
here is stopped here.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_load import event_line  # noqa: E402
from cli import devtools  # noqa: E402
from core.landing import LandingStore  # noqa: E402
from core.settings import Settings  # noqa: E402
from pipelines.actions.outbox import OUTBOX, dispatch  # noqa: E402
from pipelines.run import run_load  # noqa: E402
from warehouse import lake  # noqa: E402

RULES = """rules:
  - name: welcome
    on: created
    do: email
    email:
      subject: "Welcome, {{ name }}"
      body: "Hello {{ name }}, thank you for joining us{% if city %} in {{ city }}{% endif %}."
"""
SINK = """
import signal, sys, threading
from aiosmtpd.controller import Controller
class Count:
    received = 0
    async def handle_DATA(self, server, session, envelope):
        Count.received += 1
        return "250 OK"
controller = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
controller.stop()
print(Count.received, flush=True)
"""


class CountingSink:
    """The SMTP server in its own process (the senders measured here must not share its GIL)."""

    def __init__(self) -> None:
        self.port = devtools.free_port()
        self._proc = devtools.start(
            [sys.executable, "-c", SINK, str(self.port)],
            dict(os.environ),
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")

    def stop(self) -> int:
        """Stop the sink and return how many messages it received."""
        devtools.stop(self._proc)
        return int(self._proc.stdout.read().split()[-1])


def smtplib_alone(port: int, count: int) -> float:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        started = time.perf_counter()
        for n in range(count):
            message = EmailMessage()
            message["From"] = "bench@flavours.example"
            message["To"] = f"customer{n}@example.com"
            message["Subject"] = f"Welcome, Customer {n}"
            message.set_content(f"Hello Customer {n}, thank you for joining us.")
            smtp.send_message(message)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flavours-bench-actions-"))
    sink = CountingSink()
    try:
        settings = Settings(
            landing_url=str(work / "landing"),
            warehouse=str(work / "warehouse.sqlite"),
            dlt_dir=str(work / "dlt"),
            log_level="WARNING",
        )
        now_ms = int(time.time() * 1000)
        store = LandingStore(settings.landing_url)
        rng = random.Random(7)
        lines = [
            event_line(rng, n, "CREATE", now_ms + n, f"bench-actions-{n}").encode()
            for n in range(args.customers)
        ]
        store.land_batch(store.object_key("customers", datetime.now(UTC), "bench", 1), lines)
        run_load(settings)
        (work / "actions.yaml").write_text(RULES)
        mailing = settings.model_copy(
            update={
                "actions_file": str(work / "actions.yaml"),
                "smtp_host": "127.0.0.1",
                "smtp_port": sink.port,
                "smtp_tls": "none",
                "smtp_from": "bench@flavours.example",
            }
        )

        alone = smtplib_alone(sink.port, args.customers)
        results = {}
        for concurrency in (1, 4):
            with lake.connect(settings) as con, lake.writer_lock(lake.Lake.of(settings)):
                con.execute(f"drop table if exists {OUTBOX}")
            report = dispatch(mailing.model_copy(update={"actions_concurrency": concurrency}))
            if report.outcomes != {"sent": args.customers}:
                raise SystemExit(f"dispatch did not send everything: {dict(report.outcomes)}")
            results[concurrency] = report.seconds
    finally:
        received = sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    expected = args.customers * 3
    print(f"\n{args.customers:,} new customers, welcome e-mails to a local SMTP server, 2 cores")
    print(f"  smtplib alone, one connection      {args.customers / alone:8,.0f} messages/s")
    for concurrency, seconds in results.items():
        rate = args.customers / seconds
        print(
            f"  dispatch, concurrency {concurrency}            {rate:8,.0f} actions/s "
            f"({seconds:.1f} s, {rate / (args.customers / alone):.2f}x smtplib alone)"
        )
    print(f"  messages the server received: {received:,} of {expected:,}")
    if received != expected:
        raise SystemExit("the SMTP server did not receive every message exactly once")


if __name__ == "__main__":
    main()
