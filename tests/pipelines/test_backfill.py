"""The backfill from the Customers List API, against a real HTTP server on loopback that serves
the documented response shape (pipelines.fake_api), through to the customer dimension."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from dagster import materialize
from pydantic import SecretStr
from werkzeug.serving import make_server

from core.landing import LandingStore
from core.settings import Settings
from pipelines.assets import customers_snapshot
from pipelines.backfill import PAGE_KEY, SNAPSHOT_TOPIC, STATE_PREFIX, BackfillError, backfill
from pipelines.fake_api import FakeCustomersApi
from pipelines.resources import FlavoursSettings
from tests.conftest import VENV_BIN, wait_until
from tests.landing_helpers import customer_event, envelope, land
from tests.pipelines.conftest import load, query

TOKEN = "api-token-5f0c1b9e"


class ApiServer:
    """A FakeCustomersApi served by a threaded WSGI server on a free loopback port."""

    def __init__(self, api: FakeCustomersApi) -> None:
        self.api = api
        self._server = make_server("127.0.0.1", 0, api.app(), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def pages_served(self, status: int = 200) -> list[int]:
        return [request["page"] for request in self.api.requests if request["status"] == status]

    def stop(self) -> None:
        self.api.release.set()
        self._server.shutdown()
        self._thread.join(10)


@pytest.fixture
def serve() -> Iterator:
    """``serve(customers=…, faults=…)`` starts an API server, stopped at teardown."""
    servers: list[ApiServer] = []

    def start(**options) -> ApiServer:
        servers.append(ApiServer(FakeCustomersApi(token=TOKEN, **options)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def api_settings(settings: Settings, server: ApiServer, **changes) -> Settings:
    return settings.model_copy(
        update={
            "api_url": server.url,
            "api_token": SecretStr(TOKEN),
            "api_max_attempts": 4,
            **changes,
        }
    )


def snapshot_pages(store: LandingStore) -> list[tuple[str, int]]:
    """(run, page) of every landed snapshot object, in key order."""
    return [
        (match["run"], int(match["page"]))
        for obj in store.list_objects(SNAPSHOT_TOPIC)
        if (match := PAGE_KEY.search(obj.key))
    ]


def end_markers(store: LandingStore) -> list[str]:
    return [obj.key for obj in store.list_objects(STATE_PREFIX) if PAGE_KEY.search(obj.key)]


def test_every_page_lands_and_every_customer_reaches_the_dimension(serve, settings, store):
    server = serve(customers=23)
    before = datetime.now(UTC)

    result = backfill(api_settings(settings, server), per_page=5)

    assert (result.pages, result.customers, result.resumed_from_page) == (5, 23, None)
    assert server.pages_served() == [1, 2, 3, 4, 5]
    assert [page for _, page in snapshot_pages(store)] == [1, 2, 3, 4, 5]
    assert len(end_markers(store)) == 1
    assert not result.unexpected_fields

    load(settings)
    rows = query(
        settings,
        "select customer_id, version, change_action, valid_from, created_at, name, city "
        "from analytics.dim_customer order by customer_id",
    )
    by_id = {item["userable_id"]: item for item in server.api.items}
    assert sorted(row[0] for row in rows) == sorted(by_id)
    for customer_id, version, action, valid_from, created_at, name, city in rows:
        item = by_id[customer_id]
        assert (version, action, name, city) == (
            1,
            "SNAPSHOT",
            item["name"],
            item["userable"]["city"],
        )
        # epoch-ms and ISO-8601 items alike: dated from their created_at, before the backfill
        assert created_at is not None
        assert valid_from == created_at < before
    daily = query(
        settings,
        "select sum(new_customers), max(active_customers) from analytics.rpt_customer_daily",
    )
    assert daily == [(23, 23)]


def test_rate_limits_and_server_errors_are_retried(serve, settings, store):
    server = serve(customers=12, faults={2: ["429"], 3: ["500", "500"]})
    started = time.monotonic()

    result = backfill(api_settings(settings, server), per_page=4)

    assert (result.pages, result.customers) == (3, 12)
    assert [(r["page"], r["status"]) for r in server.api.requests] == [
        (1, 200),
        (2, 429),
        (2, 200),
        (3, 500),
        (3, 500),
        (3, 200),
    ]
    assert time.monotonic() - started >= 1  # Retry-After: 1 was honoured
    assert [page for _, page in snapshot_pages(store)] == [1, 2, 3]


def test_a_field_the_connector_does_not_map_is_reported_not_fatal(serve, settings, store, caplog):
    server = serve(customers=6, faults={1: ["extra-field"]})

    with caplog.at_level(logging.WARNING, logger="pipelines.backfill"):
        result = backfill(api_settings(settings, server), per_page=4)

    assert result.customers == 6
    assert result.unexpected_fields == {"loyalty_tier": 4}
    assert "loyalty_tier (4 items)" in caplog.text
    load(settings)
    assert query(settings, "select count(*) from analytics.dim_customer_current") == [(6,)]


def test_an_item_without_a_customer_id_is_kept_as_rejected_and_the_run_finishes(
    serve, settings, store, caplog
):
    server = serve(customers=6)
    server.api.items[1] = {**server.api.items[1], "userable": {}, "userable_id": None}
    server.api.items[4] = "not an object"

    with caplog.at_level(logging.WARNING, logger="pipelines.backfill"):
        result = backfill(api_settings(settings, server), per_page=4)

    assert (result.pages, result.customers, result.unusable_items) == (2, 4, 2)
    assert "page 1, item 2: a customer item has neither userable.id nor userable_id" in caplog.text
    assert "page 2, item 1: a customer item is not an object" in caplog.text
    assert len(end_markers(store)) == 1
    load(settings)
    assert query(settings, "select count(*) from analytics.dim_customer_current") == [(4,)]
    rejected = query(
        settings,
        "select reject_reason, line from raw.customer_events_rejected order by landing_file",
    )
    assert [reason for reason, _ in rejected] == ["missing data.id", "missing data.id"]
    assert '"api_item":"not an object"' in rejected[1][1]


def test_since_keeps_only_customers_updated_from_that_day(serve, settings):
    server = serve(customers=10)
    updated = sorted(_updated_ms(item) for item in server.api.items)
    since = datetime.fromtimestamp(updated[6] / 1000, UTC)

    result = backfill(api_settings(settings, server), per_page=3, since=since)

    assert (result.customers, result.skipped_before_since, result.pages) == (4, 6, 4)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("not-json", "not JSON (text/html"), ("no-data", "no `data` object")],
)
def test_a_page_not_in_the_documented_shape_fails_after_landing_the_good_ones(
    serve, settings, store, fault, reason
):
    server = serve(customers=10, faults={3: [fault]})
    configured = api_settings(settings, server)

    with pytest.raises(BackfillError) as failure:
        backfill(configured, per_page=3)

    message = str(failure.value)
    assert f"page 3 of {server.url}/users/customers is not the documented response" in message
    assert reason in message
    assert "the next run resumes at page 3" in message
    assert [page for _, page in snapshot_pages(store)] == [1, 2]
    assert not end_markers(store)  # not finished

    resumed = backfill(configured, per_page=3)  # the server answers page 3 properly now

    assert (resumed.resumed_from_page, resumed.pages) == (3, 2)
    assert [page for _, page in snapshot_pages(store)] == [1, 2, 3, 4]
    assert len({run for run, _ in snapshot_pages(store)}) == 1
    load(settings)
    assert query(
        settings, "select count(*), count(distinct customer_id) from analytics.dim_customer"
    ) == [(10, 10)]


def test_a_cut_off_run_resumes_only_with_the_page_size_it_started_with(serve, settings, store):
    server = serve(customers=25, faults={3: ["not-json"]})
    configured = api_settings(settings, server)
    with pytest.raises(BackfillError):
        backfill(configured, per_page=5)  # pages 1-2 landed: customers 1-10

    with pytest.raises(BackfillError) as refused:
        backfill(configured)  # page 3 of 100 would skip customers 11-200

    assert "started with --per-page 5" in str(refused.value)
    assert "--restart" in str(refused.value)
    assert [page for _, page in snapshot_pages(store)] == [1, 2]
    resumed = backfill(configured, per_page=5)
    assert (resumed.resumed_from_page, resumed.pages) == (3, 3)
    load(settings)
    assert query(settings, "select count(distinct customer_id) from analytics.dim_customer") == [
        (25,)
    ]


def test_a_refused_token_names_the_setting_and_never_shows_the_token(serve, settings, store):
    server = serve(customers=3)
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": settings.landing_url,
        "FLAVOURS_API_URL": server.url,
        "FLAVOURS_API_TOKEN": "wrong-token-d41d8cd9",
        "FLAVOURS_LOG_LEVEL": "DEBUG",
    }

    done = subprocess.run(
        [str(VENV_BIN / "flavours"), "backfill", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1
    assert (
        "Error: the Customers API refused FLAVOURS_API_TOKEN (401 Unauthenticated). "
        "Nothing was landed." in done.stderr
    )
    assert "wrong-token-d41d8cd9" not in done.stdout + done.stderr
    assert server.pages_served(401) == [1]  # refused once, not retried
    assert not snapshot_pages(store)


def test_a_killed_backfill_resumes_after_its_last_landed_page(serve, settings, store):
    server = serve(customers=20, faults={3: ["hang"]})
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": settings.landing_url,
        "FLAVOURS_API_URL": server.url,
        "FLAVOURS_API_TOKEN": TOKEN,
    }
    command = [str(VENV_BIN / "flavours"), "backfill", "--per-page", "4", "--no-progress"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: 3 in [r["page"] for r in server.api.requests], 60, what="page 3")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert [page for _, page in snapshot_pages(store)] == [1, 2]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "5 pages" not in done.stdout
    assert "resumed at page 3" in done.stdout
    assert "3 pages, 12 customers landed" in done.stdout
    pages = snapshot_pages(store)
    assert [page for _, page in pages] == [1, 2, 3, 4, 5]
    assert len({run for run, _ in pages}) == 1
    load(settings)
    assert query(
        settings, "select count(*), count(distinct customer_id) from analytics.dim_customer"
    ) == [(20, 20)]


def test_backfilling_again_adds_versions_only_for_customers_that_changed(serve, settings):
    server = serve(customers=8)
    configured = api_settings(settings, server)
    backfill(configured, per_page=5)
    load(settings)
    first = query(settings, "select * from analytics.dim_customer order by customer_sk")

    backfill(configured, per_page=5)  # a finished run: a new one, the same customers
    load(settings)
    assert query(settings, "select * from analytics.dim_customer order by customer_sk") == first

    changed = server.api.items[2]
    changed["userable"]["city"] = "Mecca"
    backfill(configured, per_page=5)
    load(settings)

    rows = [
        row[1:]
        for row in query(
            settings,
            "select customer_id, version, change_action, city, is_current "
            "from analytics.dim_customer order by version",
        )
        if row[0] == changed["userable_id"]
    ]
    assert [row[1:] for row in rows] == [
        ("SNAPSHOT", rows[0][2], False),
        ("SNAPSHOT", "Mecca", True),
    ]
    assert query(settings, "select count(*) from analytics.dim_customer") == [(9,)]
    assert query(settings, "select sum(new_customers) from analytics.rpt_customer_daily") == [(8,)]
    # the report is the sum of the customers' shares, which readers can query too
    assert query(
        settings,
        "select sum(new_customers) from intermediate.int_customer_daily_contributions",
    ) == [(8,)]


def test_a_webhook_newer_than_the_snapshot_wins_and_an_older_one_does_not(serve, settings, store):
    server = serve(customers=2)
    older, newer = (item["userable_id"] for item in server.api.items)
    backfill(api_settings(settings, server))
    now_ms = int(time.time() * 1000)
    land(
        store,
        [
            envelope(customer_event(older, "UPDATE", now_ms - 3_600_000, name="Older webhook")),
            envelope(customer_event(newer, "UPDATE", now_ms + 3_600_000, name="Newer webhook")),
        ],
    )
    load(settings)

    current = dict(query(settings, "select customer_id, name from analytics.dim_customer_current"))
    assert current[newer] == "Newer webhook"
    assert current[older] == server.api.items[0]["name"]


def test_the_backfill_asset_lands_pages_and_reports_them(serve, settings, store, monkeypatch):
    server = serve(customers=7)
    monkeypatch.setenv("FLAVOURS_API_URL", server.url)
    monkeypatch.setenv("FLAVOURS_API_TOKEN", TOKEN)

    result = materialize(
        [customers_snapshot],
        resources={"flavours": FlavoursSettings.of(settings)},
        run_config={"ops": {"landing__customers_snapshot": {"config": {"per_page": 3}}}},
    )

    assert result.success
    [materialization] = result.asset_materializations_for_node("landing__customers_snapshot")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert (metadata["pages"], metadata["customers_landed"], metadata["resumed_from_page"]) == (
        3,
        7,
        1,
    )
    assert [page for _, page in snapshot_pages(store)] == [1, 2, 3]


def test_the_backfill_asset_without_an_api_url_lands_nothing_and_says_why(settings, store):
    result = materialize(
        [customers_snapshot], resources={"flavours": FlavoursSettings.of(settings)}
    )

    assert result.success
    [materialization] = result.asset_materializations_for_node("landing__customers_snapshot")
    assert materialization.metadata["skipped"].value == "FLAVOURS_API_URL is not set"
    assert not snapshot_pages(store)


def test_an_api_that_cannot_be_reached_is_a_clear_error(settings, store):
    from cli.devtools import free_port

    unreachable = settings.model_copy(
        update={
            "api_url": f"http://127.0.0.1:{free_port()}/api",
            "api_token": SecretStr(TOKEN),
            "api_max_attempts": 2,
        }
    )

    with pytest.raises(BackfillError) as failure:
        backfill(unreachable)

    assert "could not reach http://127.0.0.1:" in str(failure.value)
    assert "after 2 attempts" in str(failure.value)
    assert "Nothing was landed." in str(failure.value)
    assert snapshot_pages(store) == []


def test_without_api_settings_the_backfill_says_which_is_missing(settings):
    with pytest.raises(BackfillError, match="FLAVOURS_API_URL is not set"):
        backfill(settings)
    with pytest.raises(BackfillError, match="FLAVOURS_API_TOKEN is not set"):
        backfill(settings.model_copy(update={"api_url": "http://127.0.0.1:9"}))


def _updated_ms(item: dict) -> int:
    value = item["updated_at"]
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value).timestamp() * 1000)
