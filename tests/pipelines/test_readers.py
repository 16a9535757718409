"""Readers never block loads, loads never make readers fail, and a reader sees a finished state.

Each reader is a process of its own (``tests.reader_loop``), as an analyst's session or a
dashboard is, holding a ``connect_reader()`` connection open while it also opens new ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from bench.bench_load import generate
from core.settings import Settings
from tests.conftest import stop_process, wait_until
from tests.landing_helpers import customer_event, envelope, land
from tests.pipelines.conftest import load
from tests.reader_loop import QUESTION
from warehouse.lake import Lake, open_lake

ROOT = Path(__file__).resolve().parents[2]


class Reader:
    def __init__(self, out: Path) -> None:
        self.out = out

    def lines(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def errors(self) -> list[str]:
        return [line["error"] for line in self.lines() if "error" in line]

    def answers(self, kind: str) -> list[tuple[int, ...]]:
        return [
            tuple(line["answer"])
            for line in self.lines()
            if line.get("kind") == kind and "answer" in line
        ]


@contextmanager
def reader_process(settings: Settings, folder: Path) -> Iterator[Reader]:
    """A reader process on ``settings``' warehouse, stopped (and waited for) on exit."""
    out, stop = folder / "reader.jsonl", folder / "reader.stop"
    env = {
        **os.environ,
        "FLAVOURS_WAREHOUSE": settings.warehouse,
        "PYTHONPATH": str(ROOT),
        "READER_MAX_S": "300",
    }
    if settings.warehouse_data_url:
        env["FLAVOURS_WAREHOUSE_DATA_URL"] = settings.warehouse_data_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reader_loop", str(out), str(stop)],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = Reader(out)
    try:
        wait_until(
            lambda: reader.lines() or proc.poll() is not None, timeout=60, what="reader ready"
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield reader
    finally:
        stop.touch()
        try:
            proc.wait(timeout=30)
        finally:
            stop_process(proc)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def published_answers(settings: Settings) -> list[tuple[int, ...]]:
    """The reader's question answered at every snapshot published so far, oldest first."""
    lake = Lake.of(settings)
    with open_lake(lake, read_only=True) as con:
        snapshots = [
            snapshot
            for (snapshot,) in con.sql(
                "select snapshot_id from ops.published_snapshots order by snapshot_id"
            ).fetchall()
        ]
    answers = []
    for snapshot in snapshots:
        with open_lake(lake, read_only=True, snapshot=snapshot) as con:
            try:
                answers.append(tuple(con.sql(QUESTION).fetchone()))
            except duckdb.CatalogException:
                continue  # published before the models had run once
    return answers


def customers(prefix: str, count: int, ts_ms: int) -> list[dict]:
    return [
        envelope(customer_event(f"{prefix}-{i}", ts_ms=ts_ms, xid=f"{prefix}-x-{i}"))
        for i in range(count)
    ]


def test_a_reader_holding_a_connection_through_three_loads(settings, store, tmp_path):
    land(store, customers("first", 40, 1_700_000_000_000))
    load(settings)

    with reader_process(settings, tmp_path) as reader:
        (ready,) = reader.answers("ready")
        for round_ in range(3):
            land(store, customers(f"round{round_}", 25, 1_700_000_100_000 + round_))
            summary = load(settings)  # a held reader connection must not make it fail
            assert summary.customers == 40 + 25 * (round_ + 1)
        final = published_answers(settings)[-1]
        wait_until(lambda: final in reader.answers("new"), timeout=30, what="a new connection")

    assert reader.errors() == []
    assert ready == (40, 40, 40, 40, 40)
    # the held connection keeps the state it opened on; new connections follow the loads
    assert set(reader.answers("held")) == {ready}
    assert final == (115, 115, 115, 115, 115)
    assert set(reader.answers("new")) <= set(published_answers(settings))


def test_queries_during_a_large_load_see_only_finished_states(settings, store, tmp_path):
    land(store, customers("first", 10, 1_600_000_000_000))
    load(settings)
    # a load of several seconds; `make bench-readers` measures the same during 1M events
    events = generate(settings.landing_url, 250_000, 25_000, 10, seed=3)

    with reader_process(settings, tmp_path) as reader:
        started = time.time()
        summary = load(settings)
        finished = time.time()
        wait_until(
            lambda: published_answers(settings)[-1] in reader.answers("new"),
            timeout=60,
            what="a new connection after the load",
        )

    assert summary.raw_events == events + 10
    assert reader.errors() == []
    during = [line for line in reader.lines() if started <= line["at"] <= finished]
    assert len(during) > 10, "the reader was not querying during the load"
    # every answer is the state a finished step left: before the load, after its raw tables,
    # after its models (never staging or analytics half-way)
    finished_states = set(published_answers(settings))
    assert {tuple(line["answer"]) for line in reader.lines() if "answer" in line} <= (
        finished_states
    )
    assert len(finished_states) >= 3


@pytest.mark.parametrize("name", ["warehouse.duckdb", "existing-duckdb-file"])
def test_a_duckdb_warehouse_file_is_refused_with_what_to_do(tmp_path, name):
    path = tmp_path / name
    if name == "existing-duckdb-file":
        duckdb.connect(str(path)).close()
    settings = Settings(warehouse=str(path), landing_url=str(tmp_path / "landing"))

    with pytest.raises(Exception, match=r"names a DuckDB database file.*warehouse\.sqlite"):
        Lake.of(settings)


def test_a_short_retention_keeps_every_snapshot_younger_than_it(settings: Settings, store):
    from warehouse import connect_reader

    settings = settings.model_copy(update={"warehouse_retention_hours": 1.0})
    land(store, [envelope(customer_event("c1", "CREATE", 1_700_000_000_000))])
    load(settings)
    land(store, [envelope(customer_event("c2", "CREATE", 1_700_000_001_000))])
    load(settings)

    with connect_reader(settings) as con:
        (customers,) = con.execute("select count(*) from analytics.dim_customer_current").fetchone()
    with open_lake(Lake.of(settings)) as con:
        (snapshots,) = con.execute("select count(*) from ducklake_snapshots('lake')").fetchone()
    assert customers == 2
    assert snapshots >= 4, "every snapshot of the last hour is kept"
