"""`flavours send` against a real receiver, and `flavours demo` end to end in a temp folder."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

import warehouse
from cli.sending import delivery_order, synthetic_events
from core.settings import Settings
from tests.conftest import TOKEN, landed_lines, run_cli


def test_synthetic_stream_has_creates_updates_deletes_and_recreations():
    events = synthetic_events(customers=20, events=400, seed=3)
    actions = Counter(event["action"] for event in events)
    by_customer: dict[str, list[str]] = {}
    for event in events:
        by_customer.setdefault(event["data"]["id"], []).append(event["action"])

    assert set(actions) == {"customers.CREATE", "customers.UPDATE", "customers.DELETE"}
    assert all(history[0] == "customers.CREATE" for history in by_customer.values())
    assert any(
        "customers.DELETE" in h
        and h.index("customers.DELETE") < len(h) - 1
        and h[h.index("customers.DELETE") + 1] == "customers.CREATE"
        for h in by_customer.values()
    ), "some customer is re-created after a delete"
    assert any(
        set(e["data"]) == {"id", "city"} or ("user" in e["data"] and len(e["data"]) == 2)
        for e in events
    ), "some updates are partial"
    assert synthetic_events(customers=20, events=400, seed=3) == events


def test_delivery_order_adds_duplicates_and_shuffles():
    events = synthetic_events(customers=5, events=100)
    deliveries = delivery_order(events, duplicates=0.2, shuffle=True)

    assert len(deliveries) == 120
    assert {e["xid"] for e in deliveries} == {e["xid"] for e in events}
    assert [e["xid"] for e in deliveries[:100]] != [e["xid"] for e in events]


def test_send_delivers_everything_to_a_real_receiver(receiver):
    result = run_cli(
        "flavours",
        "send",
        receiver.webhook_url(token=None),
        "--customers",
        "10",
        "--events",
        "60",
        "--duplicates",
        "0.5",
        "--shuffle",
        "--no-progress",
        env={**os.environ, "FLAVOURS_WEBHOOK_TOKEN": TOKEN},
    )

    assert result.returncode == 0, result.stderr
    assert "acked 91 of 91 deliveries, failed 0" in result.stdout
    landed = landed_lines(receiver.landing_url)
    assert len(landed) == 91
    assert all(e["payload"]["action"].startswith("customers.") for e in landed)


def test_send_retries_like_flavours_and_reports_failures(receiver):
    result = run_cli(
        "flavours",
        "send",
        receiver.webhook_url(token="wrong"),
        "--events",
        "3",
        "--customers",
        "3",
        "--retries",
        "2",
        "--no-progress",
        env={k: v for k, v in os.environ.items() if k != "FLAVOURS_WEBHOOK_TOKEN"},
    )

    assert result.returncode == 1
    assert "acked 0 of 4 deliveries, failed 4, 12 attempts" in result.stdout
    assert "401: 12" in result.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end_in_a_fresh_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAVOURS_")}

    result = run_cli(
        "flavours", "demo", "--customers", "30", "--events", "200", env=env, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "acked 212, failed 0" in result.stdout
    assert "checks                  all passed" in result.stdout
    assert "rpt_customer_daily" in result.stdout
    demo_settings = Settings(warehouse=str(tmp_path / "data" / "warehouse.sqlite"))
    with warehouse.connect_reader(demo_settings) as con:
        customers = con.sql("select count(*) from analytics.dim_customer_current").fetchall()
        example = con.sql(
            "select name from analytics.dim_customer "
            "where customer_id = 'c4a868ea-735e-461f-868c-a5d2eaa212d0'"
        ).fetchall()
        rejected = con.sql("select count(*) from raw.customer_events_rejected").fetchall()
    assert customers == [(32,)], "30 synthetic, the documented example, one joining now"
    assert example == [("User 1",)]
    assert rejected == [(1,)]
    assert "e-mails the SMTP sink received: 1 " in result.stdout
    assert "   | To: layla@example.com" in result.stdout
    assert "   | Subject: Welcome to Flavours, Layla Al-Harbi" in result.stdout
    with warehouse.connect_reader(demo_settings) as con:
        statuses = con.sql("select status, count(*) from ops.customer_actions group by all")
        ((versions,),) = con.sql("select count(*) from analytics.dim_customer").fetchall()
        assert dict(statuses.fetchall()) == {"sent": 1, "skipped": versions - 1}
    receiver_log = (tmp_path / "data" / "demo-receiver.log").read_text()
    assert any(
        json.loads(line).get("status") == 202
        for line in receiver_log.splitlines()
        if line.startswith("{")
    )


def test_send_rate_caps_deliveries_per_second(receiver):
    from cli.sending import send_events

    deliveries = synthetic_events(customers=5, events=20)

    report = send_events(receiver.webhook_url(), deliveries, rate=50, concurrency=8)

    assert report.acked == 20
    assert report.seconds >= 19 / 50 * 0.95, "20 deliveries at 50/s take at least ~0.38 s"
