"""`flavours sql` as a shell user runs it, and the statements it prints for the DuckDB CLI."""

from __future__ import annotations

import csv
import io
import os
import subprocess

import duckdb
import pytest

from core.landing import LandingStore
from core.settings import Settings
from tests.conftest import VENV_BIN, run_cli
from tests.landing_helpers import customer_event, envelope, land
from tests.pipelines.conftest import load


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a warehouse holding three customers, one of them deleted."""
    folder = tmp_path_factory.mktemp("sql")
    settings = Settings(
        landing_url=str(folder / "landing"),
        warehouse=str(folder / "warehouse.sqlite"),
        dlt_dir=str(folder / "dlt"),
    )
    land(
        LandingStore(settings.landing_url),
        [
            envelope(customer_event("c-1", name="Ahmed, Jr.")),
            envelope(customer_event("c-2", name="Sara")),
            envelope(customer_event("c-3", name="Omar")),
            envelope(customer_event("c-3", "DELETE", ts_ms=1_700_000_001_000, name="Omar")),
        ],
    )
    load(settings)
    return {
        **os.environ,
        "FLAVOURS_WAREHOUSE": settings.warehouse,
        "FLAVOURS_LANDING_URL": settings.landing_url,
    }


def test_prints_a_result_table(loaded):
    result = run_cli(
        "flavours",
        "sql",
        "select customer_id, name, is_deleted from analytics.dim_customer_current order by 1",
        env=loaded,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("customer_id" in line and "is_deleted" in line for line in lines)
    rows = [line for line in lines if "c-" in line]
    assert len(rows) == 3
    assert "Ahmed, Jr." in rows[0]
    assert "true" in rows[2]


def test_csv_has_a_header_and_every_row(loaded):
    result = run_cli(
        "flavours",
        "sql",
        "--csv",
        "select customer_id, name from analytics.dim_customer order by customer_id, version",
        env=loaded,
    )

    assert result.returncode == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["customer_id", "name"],
        ["c-1", "Ahmed, Jr."],
        ["c-2", "Sara"],
        ["c-3", "Omar"],
        ["c-3", "Omar"],
    ]


def test_reads_the_query_from_standard_input(loaded):
    result = subprocess_stdin(loaded, "select count(*) as n from raw.customer_events")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["n", "4"]


def subprocess_stdin(env: dict[str, str], query: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "flavours"), "sql", "--csv", "-"],
        input=query,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_writes_are_refused_and_change_nothing(loaded):
    result = run_cli("flavours", "sql", "delete from analytics.dim_customer", env=loaded)

    assert result.returncode == 1
    assert "read-only" in result.stderr
    count = run_cli(
        "flavours", "sql", "--csv", "select count(*) from analytics.dim_customer", env=loaded
    )
    assert count.stdout.splitlines()[1] == "4"


def test_a_bad_query_is_one_clear_line(loaded):
    result = run_cli("flavours", "sql", "select nope from analytics.dim_customer", env=loaded)

    assert result.returncode == 1
    assert result.stderr.startswith("Error: BinderException")
    assert "Traceback" not in result.stderr


def test_before_the_first_load_it_says_to_load(tmp_path):
    env = {**os.environ, "FLAVOURS_WAREHOUSE": str(tmp_path / "warehouse.sqlite")}

    result = run_cli("flavours", "sql", "select 1", env=env)

    assert result.returncode == 1
    assert "run `flavours load` first" in result.stderr
    assert not (tmp_path / "warehouse.sqlite").exists()


def test_duckdb_cli_statements_open_the_same_tables_in_a_plain_duckdb(loaded):
    result = run_cli("flavours", "sql", "--duckdb-cli", env=loaded)

    assert result.returncode == 0, result.stderr
    # a plain DuckDB session, as the DuckDB CLI starts one (nothing from this project's config)
    with duckdb.connect() as con:
        for statement in con.extract_statements(result.stdout):
            con.execute(statement)
        rows = con.sql("select count(*) from analytics.dim_customer_current").fetchall()
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("delete from analytics.dim_customer")
    assert rows == [(3,)]
