"""`flavours dashboard` on loopback over a demo warehouse, loaded in headless Chromium: the
rendered numbers are the ones SQL gives on the same warehouse, also while a load runs."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from cli.devtools import free_port, start, stop, wait_healthy
from cli.sending import delivery_order, documented_example, synthetic_events
from core.landing import LandingStore
from core.settings import Settings
from pipelines.run import run_load
from tests.browser import chromium, rendered_dom, screenshot
from tests.conftest import VENV_BIN, threads_of
from tests.landing_helpers import envelope, land
from warehouse import connect_reader

pytestmark = pytest.mark.slow
EXAMPLE_ID = "c4a868ea-735e-461f-868c-a5d2eaa212d0"


class Texts(HTMLParser):
    """The text of every element, in document order, and the text of elements by id."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.by_id: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "input", "meta", "link", "path", "rect", "line", "circle"):
            return
        self._open.append(dict(attrs).get("id"))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, text):
        text = text.strip()
        if not text:
            return
        self.texts.append(text)
        for element in self._open:
            if element:
                self.by_id[element] = (self.by_id.get(element, "") + " " + text).strip()


def texts_of(dom: str) -> Texts:
    parser = Texts()
    parser.feed(dom)
    return parser


def settings_in(folder: Path) -> Settings:
    return Settings(
        landing_url=str(folder / "landing"),
        warehouse=str(folder / "warehouse.sqlite"),
        dlt_dir=str(folder / "dlt"),
        log_level="WARNING",
    )


def environment(settings: Settings) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLAVOURS_")},
        "FLAVOURS_LANDING_URL": settings.landing_url,
        "FLAVOURS_WAREHOUSE": settings.warehouse,
        "FLAVOURS_DLT_DIR": settings.dlt_dir,
        "FLAVOURS_LOG_LEVEL": "WARNING",
    }


class Dashboard:
    def __init__(self, settings: Settings, *extra: str) -> None:
        self.port = free_port()
        self.proc = start(
            [str(VENV_BIN / "flavours"), "dashboard", "--port", str(self.port), *extra],
            environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/"
        wait_healthy(f"{self.url}healthz", self.proc, what="dashboard")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[tuple[Settings, Dashboard]]:
    chromium()  # skip before building anything when there is no browser
    settings = settings_in(tmp_path_factory.mktemp("dashboard"))
    store = LandingStore(settings.landing_url)
    events = synthetic_events(customers=40, events=400, seed=11)
    land(
        store,
        [envelope(e) for e in [documented_example(), *delivery_order(events, duplicates=0.05)]],
    )
    land(store, [b"{torn line"])  # one rejected event, which the page must admit to
    run_load(settings)
    dashboard = Dashboard(settings)
    yield settings, dashboard
    stop(dashboard.proc)


def sql(settings: Settings, query: str, params=None) -> list[tuple]:
    with connect_reader(settings) as con:
        return con.execute(query, params or []).fetchall()


def test_the_page_shows_what_sql_gives_and_a_screenshot_is_kept(demo, tmp_path):
    settings, dashboard = demo
    page = texts_of(rendered_dom(dashboard.url, tmp_path))
    picture = screenshot(dashboard.url, tmp_path / "dashboard.png")

    ((customers, active, deleted),) = sql(
        settings,
        "select count(*), count(*) filter (where not is_deleted), "
        "count(*) filter (where is_deleted) from analytics.dim_customer_current",
    )
    assert page.by_id["kpi-customers"] == f"{customers:,}"
    assert page.by_id["kpi-active"] == f"{active:,}"
    assert page.by_id["kpi-deleted"] == f"{deleted:,}"
    ((first, last, new, updated, removed),) = sql(
        settings,
        "select min(day), max(day), sum(new_customers), sum(updated_customers), "
        "sum(deleted_customers) from analytics.rpt_customer_daily",
    )
    assert page.by_id["range-totals"] == (
        f"From {first} to {last}: {new:,} new, {updated:,} updated, {removed:,} deleted"
    )
    cities = sql(
        settings,
        "select coalesce(city, '(unknown)'), count(*) as n from analytics.dim_customer_current "
        "where not is_deleted group by all order by n desc, 1",
    )
    table = page.by_id["breakdown-table"].split()
    for city, count in cities[:5]:
        assert f"{city} {count}" in " ".join(table), f"{city}: {count} customers"
    assert "1 rejected events, 0 delivery errors" in page.by_id["freshness"]
    assert "Personal data masked" in page.by_id["freshness"]
    assert "Error" not in " ".join(page.texts)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_customer_timeline_by_e_mail_with_personal_data_masked(demo, tmp_path):
    settings, dashboard = demo
    ((first, last),) = sql(settings, "select min(day), max(day) from analytics.rpt_customer_daily")
    start = last - timedelta(days=2)
    url = f"{dashboard.url}?customer=user1@example.com&start={start}&end={last}&period=month"
    page = texts_of(rendered_dom(url, tmp_path))

    ((versions,),) = sql(
        settings, "select count(*) from analytics.dim_customer where customer_id = ?", [EXAMPLE_ID]
    )
    plural = "version" if versions == 1 else "versions"
    assert page.by_id["timeline-title"] == f"Customer {EXAMPLE_ID}: {versions} {plural}"
    timeline = page.by_id["timeline"]
    assert "first version" in timeline
    assert "user1@example.com" not in timeline
    assert re.search(r"u\*+@example\.com|\*\*\*@example\.com", timeline), timeline
    # the link's date range and period drive the charts' totals
    ((new, updated, removed),) = sql(
        settings,
        "select sum(new_customers), sum(updated_customers), sum(deleted_customers) "
        "from analytics.rpt_customer_daily where day between ? and ?",
        [start, last],
    )
    assert first < start
    assert page.by_id["range-totals"] == (
        f"From {start} to {last}: {new:,} new, {updated:,} updated, {removed:,} deleted"
    )


def test_personal_data_is_shown_only_when_the_setting_allows_it(demo, tmp_path):
    settings, _ = demo
    env = environment(settings) | {"FLAVOURS_DASHBOARD_PERSONAL_DATA": "true"}
    port = free_port()
    proc = start([str(VENV_BIN / "flavours"), "dashboard", "--port", str(port)], env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, what="dashboard")
        page = texts_of(rendered_dom(f"http://127.0.0.1:{port}/?customer={EXAMPLE_ID}", tmp_path))
    finally:
        stop(proc)

    assert "user1@example.com" in page.by_id["timeline"]
    assert "Personal data shown" in page.by_id["freshness"]


def test_a_stopped_dashboard_exits_cleanly_and_its_master_never_loads_duckdb(demo, tmp_path):
    """DuckDB starts a thread when imported, so a worker forked from a master that imported it
    aborts at exit ("terminate called without an active exception", SIGABRT)."""
    settings, _ = demo
    log = tmp_path / "dashboard.log"
    port = free_port()
    with log.open("wb") as out:
        proc = start(
            [str(VENV_BIN / "flavours"), "dashboard", "--port", str(port)],
            environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, what="dashboard")
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=30)
        master_libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        master_threads = threads_of(proc.pid)
    finally:
        stop(proc)

    assert page.status_code == 200
    assert "_duckdb" not in master_libraries
    assert master_threads == 1
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "SIGABRT" not in output, output
    assert "terminate called" not in output, output


def freeze_mid_load(settings: Settings, load: subprocess.Popen, raw_before: int) -> None:
    """Stop the load's processes (SIGSTOP) once its raw events are visible to readers: it is
    then frozen between its raw commit and its models' commit, holding what it holds."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert load.poll() is None, "the load ended before it was seen mid-way"
        (raw,) = sql(settings, "select count(*) from raw.customer_events")[0]
        if raw > raw_before:
            os.killpg(load.pid, signal.SIGSTOP)
            return
        time.sleep(0.02)
    raise AssertionError("the load's raw events never became visible")


def test_the_page_renders_a_finished_state_while_a_load_is_frozen_mid_way(tmp_path):
    chromium()
    settings = settings_in(tmp_path)
    store = LandingStore(settings.landing_url)
    land(store, [envelope(e) for e in synthetic_events(customers=50, events=300, seed=2)])
    run_load(settings)
    current = "select count(*) from analytics.dim_customer_current"
    before = sql(settings, current)[0][0]
    raw_before = sql(settings, "select count(*) from raw.customer_events")[0][0]
    more = synthetic_events(customers=30_000, events=150_000, seed=3)
    for n in range(0, len(more), 50_000):
        land(store, [envelope(e) for e in more[n : n + 50_000]])
    dashboard = Dashboard(settings)
    load = start([str(VENV_BIN / "flavours"), "load"], environment(settings))
    try:
        freeze_mid_load(settings, load, raw_before)
        during = sql(settings, current)[0][0]
        page = texts_of(rendered_dom(dashboard.url, tmp_path))
        os.killpg(load.pid, signal.SIGCONT)
        assert load.wait(timeout=300) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(load.pid, signal.SIGCONT)
        stop(load)
        stop(dashboard.proc)

    after = sql(settings, current)[0][0]
    assert during == before < after, "frozen after its raw commit, before its models' commit"
    assert page.by_id["kpi-customers"] == f"{before:,}"
    assert "Error" not in " ".join(page.texts)
