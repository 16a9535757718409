"""The backfill as a newcomer runs it: `flavours demo`, then `flavours fake-api` and
`flavours backfill`, and the API's customers are in the dimension beside the demo's."""

from __future__ import annotations

import os

import pytest

import warehouse
from cli.devtools import free_port, start, stop, wait_healthy
from core.settings import Settings
from tests.conftest import VENV_BIN, run_cli

API_CUSTOMERS = 12


@pytest.mark.slow
def test_demo_then_backfill_from_the_fake_api_adds_the_existing_customers(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAVOURS_")}
    demo = run_cli("flavours", "demo", "--customers", "5", "--events", "20", env=env, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    settings = Settings(warehouse=str(tmp_path / "data" / "warehouse.sqlite"))
    with warehouse.connect_reader(settings) as con:
        (before,) = con.sql("select count(*) from analytics.dim_customer_current").fetchone()

    port = free_port()
    api = start(
        [
            str(VENV_BIN / "flavours"),
            "fake-api",
            "--port",
            str(port),
            "--customers",
            str(API_CUSTOMERS),
        ],
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", api, what="fake API")
        api_env = {
            **env,
            "FLAVOURS_API_URL": f"http://127.0.0.1:{port}",
            "FLAVOURS_API_TOKEN": "fake-api-token",
        }
        backfill = run_cli(
            "flavours", "backfill", "--per-page", "5", "--no-progress", env=api_env, cwd=tmp_path
        )
    finally:
        stop(api)

    assert backfill.returncode == 0, backfill.stderr[-3000:]
    assert f"3 pages, {API_CUSTOMERS} customers landed" in backfill.stdout
    assert "fake-api-token" not in backfill.stdout + backfill.stderr
    load = run_cli("flavours", "load", env=env, cwd=tmp_path)
    assert load.returncode == 0, load.stderr[-3000:]
    shown = run_cli(
        "flavours",
        "sql",
        "select count(*) as customers from analytics.dim_customer_current "
        "where change_action = 'SNAPSHOT'",
        "--csv",
        env=env,
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.split() == ["customers", str(API_CUSTOMERS)]
    with warehouse.connect_reader(settings) as con:
        (current,) = con.sql("select count(*) from analytics.dim_customer_current").fetchone()
    assert before == 7, "the demo's 5 customers, the documented example, one joining now"
    assert current == before + API_CUSTOMERS
