"""Actions on customer events through the outbox, against a real SMTP server (aiosmtpd) and a
real HTTP server that verifies Standard Webhooks signatures, both on loopback."""

from __future__ import annotations

import logging
import random
import ssl
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, Failure, RunRequest, SkipReason, build_sensor_context

from core.landing import LandingStore
from core.settings import Settings
from pipelines.actions.assets import due_actions
from pipelines.actions.outbox import dispatch, retry
from pipelines.actions.rules import RulesFileError, load_rules
from pipelines.definitions import build_definitions
from pipelines.resources import FlavoursSettings
from pipelines.run import run_load
from tests.action_servers import WEBHOOK_SECRET, SmtpServer, WebhookReceiver
from tests.landing_helpers import customer_event, envelope, land
from tests.pipelines.conftest import load, query

NOW_MS = int(time.time() * 1000)
WELCOME = """
rules:
  - name: welcome
    on: created
    do: email
    email:
      subject: "Welcome, {{ name }}"
      body: "Hello {{ name }}, you joined from {{ city }}."
      languages:
        ar:
          subject: "أهلاً {{ name }}"
          body: "مرحباً {{ name }}"
"""
CRM = """
rules:
  - name: crm
    on: [created, updated, deleted, reactivated]
    do: webhook
    webhook:
      url: URL
      secret_env: CRM_WEBHOOK_SECRET
      timeout_s: 1
"""


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    server = WebhookReceiver()
    yield server
    server.stop()


def with_actions(settings: Settings, tmp_path: Path, rules: str, **more) -> Settings:
    path = tmp_path / "actions.yaml"
    path.write_text(textwrap.dedent(rules))
    return Settings(**{**settings.model_dump(), "actions_file": str(path), **more})


def smtp_settings(settings: Settings, smtp: SmtpServer) -> dict:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_tls": "none",
        "smtp_from": "Flavours Restaurant <hello@restaurant.test>",
        "smtp_timeout_s": 2,
        "actions_retry_base_s": 0,
    }


def outbox(settings: Settings) -> list[tuple]:
    return query(
        settings,
        "select rule, event, customer_id, version, status, attempts from ops.customer_actions "
        "order by customer_id, version, rule",
    )


def test_duplicates_replays_and_rebuilds_send_one_welcome_per_customer(
    settings, store: LandingStore, smtp, tmp_path
):
    settings = with_actions(settings, tmp_path, WELCOME, **smtp_settings(settings, smtp))
    events = []
    for n in range(3):
        customer = f"c{n}"
        events.append(customer_event(customer, "CREATE", NOW_MS + n, name=f"Customer {n}"))
        events.append(customer_event(customer, "UPDATE", NOW_MS + 10 + n, name=f"Renamed {n}"))
    deliveries = events + events[:3]  # Flavours' retries
    random.Random(4).shuffle(deliveries)
    land(store, [envelope(event) for event in deliveries[:5]])
    load(settings)
    land(store, [envelope(event) for event in deliveries[5:]])
    load(settings)

    assert [message["To"] for message in smtp.messages] == ["user1@example.com"] * 3
    subjects = sorted(str(message["Subject"]) for message in smtp.messages)
    assert subjects == ["Welcome, Customer 0", "Welcome, Customer 1", "Welcome, Customer 2"]
    rows = outbox(settings)
    assert [row[4] for row in rows if row[1] == "created"] == ["sent", "sent", "sent"]
    assert {row[4] for row in rows if row[1] == "updated"} == {"skipped"}

    land(store, [envelope(event) for event in events])  # a replay of every event
    load(settings)
    load(settings, full_refresh=True)

    assert len(smtp.messages) == 3
    assert dispatch(settings).outcomes == {}


def test_a_dispatch_of_many_batches_keeps_one_smtp_connection_per_sending_thread(
    settings, store: LandingStore, smtp, tmp_path
):
    land(
        store,
        [envelope(customer_event(f"c{n}", "CREATE", NOW_MS + n, name=f"C {n}")) for n in range(12)],
    )
    load(settings)  # no rules yet: nothing planned
    settings = with_actions(
        settings, tmp_path, WELCOME, **smtp_settings(settings, smtp), actions_concurrency=2
    )

    report = dispatch(settings, batch_size=3)

    assert report.outcomes == {"sent": 12}
    assert len(smtp.messages) == 12
    assert smtp.sink.greetings <= 2, "four batches, two sending threads"


def test_delete_then_create_sends_deleted_then_reactivated_signed(
    settings, store: LandingStore, hooks, tmp_path
):
    settings = with_actions(
        settings, tmp_path, CRM.replace("URL", hooks.url), actions_retry_base_s=0
    )
    events = [
        customer_event("c1", "CREATE", NOW_MS),
        customer_event("c1", "DELETE", NOW_MS + 1000),
        customer_event("c1", "CREATE", NOW_MS + 2000, name="Back again"),
    ]
    land(store, [envelope(event) for event in reversed(events)])  # newest first
    load(settings)

    assert [body["type"] for body in hooks.received] == [
        "customer.created",
        "customer.deleted",
        "customer.reactivated",
    ]
    assert hooks.unverified == 0
    assert hooks.received[2]["data"]["customer"]["name"] == "Back again"
    assert "fcm_token" not in hooks.received[0]["data"]["customer"]
    action_ids = [
        action_id
        for (action_id,) in query(
            settings, "select action_id from ops.customer_actions order by valid_from"
        )
    ]
    assert hooks.ids == action_ids, "webhook-id is the outbox's idempotency key"


def test_a_failing_webhook_is_retried_then_dead_and_revived_by_retry(
    settings, store: LandingStore, hooks, tmp_path
):
    settings = with_actions(
        settings,
        tmp_path,
        CRM.replace("URL", hooks.url),
        actions_retry_base_s=0,
        actions_max_attempts=3,
    )
    hooks.answers = [500, "hang", 503]
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])
    load(settings)  # attempt 1: 500

    assert outbox(settings) == [("crm", "created", "c1", 1, "failed", 1)]
    dispatch(settings)  # attempt 2: no answer within the 1 s timeout
    ((error,),) = query(settings, "select last_error from ops.customer_actions")
    assert "timed out" in error.lower()
    dispatch(settings)  # attempt 3: 503, the last

    assert outbox(settings) == [("crm", "created", "c1", 1, "dead", 3)]
    assert hooks.received == []
    assert retry(settings, rule="crm") == 1
    dispatch(settings)
    assert outbox(settings) == [("crm", "created", "c1", 1, "sent", 1)]
    assert len(hooks.received) == 1


def test_a_client_error_is_dead_at_once(settings, store: LandingStore, hooks, tmp_path):
    settings = with_actions(settings, tmp_path, CRM.replace("URL", hooks.url))
    hooks.answers = [410]
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])
    load(settings)

    assert outbox(settings) == [("crm", "created", "c1", 1, "dead", 1)]
    assert query(settings, "select last_error from ops.customer_actions") == [
        (f"HTTP 410 from {hooks.url}",)
    ]


def test_versions_older_than_max_age_are_skipped_not_sent(
    settings, store: LandingStore, smtp, tmp_path
):
    settings = with_actions(settings, tmp_path, WELCOME, **smtp_settings(settings, smtp))
    three_days_ago = NOW_MS - 3 * 24 * 3600 * 1000
    land(store, [envelope(customer_event(f"old{n}", "CREATE", three_days_ago)) for n in range(5)])
    land(store, [envelope(customer_event("new", "CREATE", NOW_MS))])
    load(settings)

    assert len(smtp.messages) == 1
    rows = query(
        settings,
        "select customer_id, status, skip_reason from ops.customer_actions order by customer_id",
    )
    assert rows[0] == ("new", "sent", None)
    assert {row[1:] for row in rows[1:]} == {
        ("skipped", "older than max_age 1 day, 0:00:00 when first seen")
    }


def test_an_smtp_outage_keeps_rows_and_they_go_out_when_it_is_back(
    settings, store: LandingStore, smtp, tmp_path
):
    settings = with_actions(settings, tmp_path, WELCOME, **smtp_settings(settings, smtp))
    smtp.stop()
    land(store, [envelope(customer_event(f"c{n}", "CREATE", NOW_MS)) for n in range(4)])
    load(settings)

    rows = query(settings, "select status, attempts, last_error from ops.customer_actions")
    assert {row[:2] for row in rows} == {("failed", 1)}
    assert all("Connection refused" in row[2] for row in rows)
    smtp.start()
    dispatch(settings)

    assert len(smtp.messages) == 4
    assert {row[4:] for row in outbox(settings)} == {("sent", 2)}


def test_a_refused_sender_is_a_setting_to_fix_so_actions_wait_for_it(
    settings, store: LandingStore, smtp, tmp_path
):
    settings = with_actions(settings, tmp_path, WELCOME, **smtp_settings(settings, smtp))
    smtp.sink.mode = "refuse-sender"
    land(store, [envelope(customer_event(f"c{n}", "CREATE", NOW_MS)) for n in range(3)])
    load(settings)

    rows = query(settings, "select status, attempts, last_error from ops.customer_actions")
    assert {row[:2] for row in rows} == {("failed", 1)}
    assert all("sender not allowed" in row[2] for row in rows)
    smtp.sink.mode = "accept"
    dispatch(settings)

    assert len(smtp.messages) == 3
    assert {row[4:] for row in outbox(settings)} == {("sent", 2)}


def test_a_refused_recipient_is_dead_and_its_address_is_not_kept(
    settings, store: LandingStore, smtp, tmp_path
):
    settings = with_actions(settings, tmp_path, WELCOME, **smtp_settings(settings, smtp))
    smtp.sink.mode = "refuse"
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])
    load(settings)

    ((status, error),) = query(settings, "select status, last_error from ops.customer_actions")
    assert status == "dead"
    assert "550" in error
    assert "user1@example.com" not in error


def in_city(event: dict, city: str) -> dict:
    event["data"]["city"] = city
    return event


def test_where_require_and_a_template_per_language(settings, store: LandingStore, smtp, tmp_path):
    rules = WELCOME.replace(
        "    on: created\n", "    on: created\n    where: {city: [Riyadh, Jeddah]}\n"
    )
    settings = with_actions(settings, tmp_path, rules, **smtp_settings(settings, smtp))
    created = [
        in_city(customer_event("ar", "CREATE", NOW_MS, lang="ar", name="Noura"), "Riyadh"),
        in_city(customer_event("en", "CREATE", NOW_MS, lang="en", name="Sam"), "Jeddah"),
        in_city(customer_event("no-email", "CREATE", NOW_MS, email=None), "Riyadh"),
        in_city(customer_event("dammam", "CREATE", NOW_MS), "Dammam"),
    ]
    land(store, [envelope(event) for event in created])
    load(settings)

    subjects = sorted(str(message["Subject"]) for message in smtp.messages)
    assert subjects == ["Welcome, Sam", "أهلاً Noura"]
    sam = next(message for message in smtp.messages if "Sam" in str(message["Subject"]))
    assert sam.get_content().strip() == "Hello Sam, you joined from Jeddah."
    reasons = dict(
        query(
            settings, "select customer_id, coalesce(skip_reason, status) from ops.customer_actions"
        )
    )
    assert reasons == {
        "ar": "sent",
        "en": "sent",
        "no-email": "filtered out by where/require",
        "dammam": "filtered out by where/require",
    }


def test_e_mails_and_payloads_are_never_logged(
    settings, store: LandingStore, smtp, tmp_path, caplog
):
    settings = with_actions(settings, tmp_path, WELCOME, **smtp_settings(settings, smtp))
    caplog.set_level(logging.DEBUG)
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS, name="Private Person"))])
    load(settings)

    assert len(smtp.messages) == 1
    assert "actions: planned 1 pending" in caplog.text
    assert "Welcome, Private Person" not in caplog.text
    assert "Hello Private Person" not in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pipelines.action")]
    assert ours, "the actions log what they do"
    assert not [line for line in ours if "user1@example.com" in line or "Private" in line]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n  - name: a\n    on: created\n    do: email\n   email: {}\n",
            ":5: not valid YAML",
        ),
        (
            "rules:\n  - name: welcome\n    on: joined\n    do: email\n",
            ":3: rules.0.on.0: Input should be 'created', 'updated', 'deleted' or 'reactivated'",
        ),
        (
            "rules:\n  - name: w\n    on: created\n    do: email\n    email:\n"
            "      subject: 'Hi {{ nickname }}'\n      body: x\n",
            ":6: rules.0.email.subject: template uses nickname, not a customer attribute",
        ),
        (
            "rules:\n  - name: w\n    on: created\n    where: {town: Riyadh}\n    do: email\n"
            "    email: {subject: s, body: b}\n",
            ":4: rules.0.where: town: not a customer attribute",
        ),
        (
            "rules:\n  - name: w\n    on: created\n    max_age: soon\n    do: email\n"
            "    email: {subject: s, body: b}\n",
            ":4: rules.0.max_age: max_age is a duration like 30m, 24h or 7d, or none",
        ),
        (
            "rules:\n  - name: w\n    on: created\n    do: webhook\n"
            "    email: {subject: s, body: b}\n",
            ":2: rules.0: a rule with `do: webhook` needs a `webhook:` section, and only that",
        ),
    ],
)
def test_a_bad_rules_file_fails_naming_the_line(tmp_path, text, expected):
    path = tmp_path / "actions.yaml"
    path.write_text(text)

    with pytest.raises(RulesFileError) as raised:
        load_rules(path)

    assert str(raised.value).startswith(str(path))
    assert expected in str(raised.value)


def test_a_bad_rules_file_fails_the_dagster_step_with_its_message(settings, store, tmp_path):
    settings = with_actions(settings, tmp_path, "rules:\n  - name: x\n    on: created\n")
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])

    with pytest.raises(Failure, match=r"actions.yaml:2: rules.0.do: Field required"):
        run_load(settings)
    assert query(settings, "select count(*) from analytics.dim_customer") == [(1,)]


def test_the_outbox_asset_reports_and_its_check_warns_on_dead_actions(
    settings, store: LandingStore, hooks, tmp_path
):
    settings = with_actions(settings, tmp_path, CRM.replace("URL", hooks.url))
    hooks.answers = [404]
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])

    result, _ = run_load(settings)

    (materialization,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path == ["ops", "customer_actions"]
    ]
    metadata = materialization.materialization.metadata
    assert metadata["dead_now"].value == 1
    assert metadata["outbox_by_status"].value == {"dead": 1}
    (check,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "no_dead_actions"
    ]
    assert not check.passed
    assert check.severity.value == "WARN"
    assert check.metadata["sample"].value[0]["last_error"] == f"HTTP 404 from {hooks.url}"


def test_starttls_and_login_a_wrong_password_waits_for_the_right_one(
    settings, store: LandingStore, tmp_path, self_signed_cert
):
    cert, key = self_signed_cert
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = SmtpServer(tls=tls, logins={"mailer": "s3cret-pass"})
    try:
        mail = {**smtp_settings(settings, server), "smtp_tls": "starttls"}
        mail |= {"smtp_ca_file": str(cert), "smtp_username": "mailer"}
        land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])
        load(with_actions(settings, tmp_path, WELCOME, **mail, smtp_password="wrong-pass"))
        ((status, error),) = query(settings, "select status, last_error from ops.customer_actions")
        dispatch(with_actions(settings, tmp_path, WELCOME, **mail, smtp_password="s3cret-pass"))
    finally:
        server.stop()

    assert status == "failed", "a login failure is retried, not dead"
    assert error.startswith("SMTPAuthenticationError: (535")
    assert "s3cret" not in error
    assert "wrong-pass" not in error
    assert len(server.messages) == 1
    assert outbox(settings) == [("welcome", "created", "c1", 1, "sent", 2)]


def test_the_sensor_asks_for_a_dispatch_only_while_actions_are_due(
    settings, store: LandingStore, hooks, tmp_path
):
    settings = with_actions(
        settings, tmp_path, CRM.replace("URL", hooks.url), actions_retry_base_s=0
    )

    def evaluate():
        flavours = FlavoursSettings.of(settings)
        with DagsterInstance.ephemeral() as instance:
            context = build_sensor_context(
                instance=instance,
                resources={"flavours": flavours},
                definitions=build_definitions(flavours),
            )
            return due_actions(context)

    hooks.answers = [500]
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])
    before = evaluate()
    load(settings)
    failed = evaluate()
    dispatch(settings)
    sent = evaluate()

    assert isinstance(before, SkipReason)
    assert isinstance(failed, RunRequest)
    assert isinstance(sent, SkipReason)
    assert "no actions are due" in str(sent.skip_message)
    assert len(hooks.received) == 1


def test_an_smtp_server_that_hangs_times_out_and_the_message_goes_later(
    settings, store: LandingStore, smtp, tmp_path
):
    settings = with_actions(
        settings, tmp_path, WELCOME, **{**smtp_settings(settings, smtp), "smtp_timeout_s": 1}
    )
    smtp.sink.mode = "hang"
    land(store, [envelope(customer_event("c1", "CREATE", NOW_MS))])
    load(settings)
    ((status, error),) = query(settings, "select status, last_error from ops.customer_actions")
    smtp.sink.release.set()
    smtp.sink.mode = "accept"
    dispatch(settings)

    assert status == "failed"
    assert "timed out" in error
    assert len(smtp.messages) == 1
    assert outbox(settings) == [("welcome", "created", "c1", 1, "sent", 2)]
