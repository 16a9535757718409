"""Loading landed objects into raw with dlt under Dagster: contract, rejects, exactly once."""

from __future__ import annotations

import gc
import gzip
import json
import logging
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from dagster import DagsterInstance

import warehouse
from core.landing import LandingStore
from core.logs import PROJECT_LOGGERS
from core.settings import Settings
from pipelines.definitions import build_definitions
from pipelines.landing_source import LoadTally, flavours_landing
from pipelines.loading import RAW_TABLES, discard_partial_loads, make_pipeline, pending_objects
from pipelines.resources import FlavoursSettings
from pipelines.run import (
    LOAD_OP,
    RARE_COLLECTION_THRESHOLD,
    STAGING_OP,
    one_shot_collector,
    run_load,
)
from tests.conftest import VENV_BIN, stop_process
from tests.landing_helpers import EXAMPLE, customer_event, days_ago, envelope, land
from tests.pipelines.conftest import load, query
from warehouse import connect, runner

RAW_CONTRACT = [
    "xid",
    "action",
    "event_ts",
    "customer_id",
    "payload",
    "received_at",
    "request_id",
    "landing_file",
    "line_no",
]


def test_documented_example_loads_into_raw_customer_events(settings, store):
    key = land(store, [envelope(EXAMPLE)])

    summary = load(settings)

    columns = query(
        settings,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'raw' and table_name = 'customer_events'",
    )
    types = dict(columns)
    assert list(types)[: len(RAW_CONTRACT)] == RAW_CONTRACT
    assert types["event_ts"] == "TIMESTAMP WITH TIME ZONE"
    assert types["payload"] == "JSON"
    assert "_dlt_load_id" in types
    [(xid, action, event_ts_ms, customer_id, payload, landing_file, line_no)] = query(
        settings,
        "select xid, action, epoch_ms(event_ts), customer_id, payload, landing_file, line_no "
        "from raw.customer_events",
    )
    assert (xid, action, customer_id) == (EXAMPLE["xid"], "customers.CREATE", EXAMPLE["data"]["id"])
    assert event_ts_ms == EXAMPLE["timestamp"]
    assert json.loads(payload) == EXAMPLE
    assert (landing_file, line_no) == (key, 1)
    assert summary.objects_loaded == 1
    assert summary.raw_events == 1
    # dlt's load package (a parquet copy of the events) does not outlive the load
    assert not [p for p in Path(settings.dlt_dir).rglob("*") if p.suffix == ".parquet"]


def test_every_materialization_reports_its_row_count_columns_and_a_preview(settings, store):
    land(store, [envelope(EXAMPLE), envelope(customer_event("c-2"))])

    result, _ = run_load(settings)

    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    for asset in [
        "raw/customer_events",
        "raw/customer_events_rejected",
        "staging/stg_customer_events",
        "analytics/dim_customer",
        "analytics/dim_customer_current",
    ]:
        entries = metadata[asset]
        table = asset.replace("/", ".")
        columns = [row[0] for row in query(settings, f"describe {table}")]
        ((rows,),) = query(settings, f"select count(*) from {table}")  # noqa: S608
        assert entries["dagster/row_count"].value == rows, asset
        assert [c.name for c in entries["dagster/column_schema"].schema.columns] == columns
        records = entries["preview"].records
        assert len(records) == rows, asset
        assert all(list(record.data) == columns for record in records), asset
    customer_ids = {
        r.data["customer_id"] for r in metadata["analytics/dim_customer"]["preview"].records
    }
    assert customer_ids == {EXAMPLE["data"]["id"], "c-2"}
    (example,) = [
        r.data
        for r in metadata["raw/customer_events"]["preview"].records
        if r.data["xid"] == EXAMPLE["xid"]
    ]
    assert json.loads(example["payload"]) == EXAMPLE


def test_every_data_file_of_the_warehouse_is_zstd_compressed(settings, store):
    events = [customer_event(f"c-{i}", xid=f"x-{i}", name=f"Customer {i}") for i in range(50)]
    land(store, [envelope(event) for event in events])

    load(settings)

    with warehouse.connect(settings) as con:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = 'lake'"
        ).fetchall()
        files = [
            path
            for schema, table in tables
            for (path,) in con.execute(
                "select data_file from ducklake_list_files('lake', ?, schema => ?)", [table, schema]
            ).fetchall()
        ]
        codecs = {
            codec
            for (codec,) in con.execute(
                "select distinct compression from parquet_metadata(?)", [files]
            ).fetchall()
        }
    assert {"raw", "staging", "analytics"} <= {schema for schema, _ in tables}
    assert files
    assert codecs == {"ZSTD"}


def test_delivery_error_webhooks_load_into_raw_delivery_errors(settings, store):
    land(
        store,
        [envelope({"code": 504, "endpoint": "https://x/hook", "message": "timeout"}, "errors")],
        topic="errors",
    )

    load(settings)

    assert query(settings, "select code, endpoint, message from raw.delivery_errors") == [
        (504, "https://x/hook", "timeout")
    ]


def _without(event: dict, *path: str) -> dict:
    event = json.loads(json.dumps(event))
    target = event
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return event


def _with(event: dict, value: object, *path: str) -> dict:
    event = json.loads(json.dumps(event))
    target = event
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return event


BAD_EVENTS = {
    "missing xid": _without(EXAMPLE, "xid"),
    "xid is not a non-empty string": _with(EXAMPLE, 42, "xid"),
    "missing action": _without(EXAMPLE, "action"),
    "unknown action": _with(EXAMPLE, "products.CREATE", "action"),
    "missing timestamp": _without(EXAMPLE, "timestamp"),
    "timestamp is not an integer": _with(EXAMPLE, "2024-01-01", "timestamp"),
    "timestamp is out of range": _with(EXAMPLE, 10**17, "timestamp"),
    "missing data.id": _without(EXAMPLE, "data", "id"),
    "data.id is not a non-empty string": _with(EXAMPLE, "", "data", "id"),
}


def test_invalid_lines_are_rejected_with_reason_and_the_load_succeeds(settings, store):
    lines = [envelope(event) for event in BAD_EVENTS.values()]
    lines += [envelope([1, 2]), b"this is not json", envelope(EXAMPLE)]
    key = land(store, lines)
    # A torn last line: the object ends in the middle of a JSON document.
    torn = Path(settings.landing_url) / key
    torn.write_bytes(torn.read_bytes() + envelope(EXAMPLE)[:40])

    summary = load(settings)

    rejected = query(
        settings,
        "select line_no, reject_reason, line from raw.customer_events_rejected order by line_no",
    )
    reasons = {line_no: reason for line_no, reason, _ in rejected}
    for line_no, expected in enumerate(BAD_EVENTS, start=1):
        assert expected in reasons[line_no], (expected, reasons[line_no])
    assert "no payload object" in reasons[len(BAD_EVENTS) + 1]
    assert "not valid JSON" in reasons[len(BAD_EVENTS) + 2]
    assert "not valid JSON" in reasons[len(BAD_EVENTS) + 4]
    assert rejected[-1][2] == envelope(EXAMPLE)[:40].decode()
    assert query(settings, "select line_no from raw.customer_events") == [(len(BAD_EVENTS) + 3,)]
    assert summary.rejected == len(BAD_EVENTS) + 3


def test_action_letter_case_is_accepted(settings, store):
    land(store, [envelope(customer_event("c1", action=a)) for a in ("create", "Update", "DELETE")])

    load(settings)

    assert query(settings, "select count(*) from raw.customer_events") == [(3,)]


def test_each_object_is_loaded_exactly_once_across_runs(settings, store):
    land(store, [envelope(customer_event("c1")), envelope(customer_event("c2"))])
    first = load(settings)
    second = load(settings)
    land(store, [envelope(customer_event("c3"))])
    third = load(settings)

    assert (first.objects_loaded, second.objects_loaded, third.objects_loaded) == (1, 0, 1)
    assert query(settings, "select count(*), count(distinct xid) from raw.customer_events") == [
        (3, 3)
    ]


def test_a_run_with_nothing_new_does_not_run_dlt_and_still_reports_every_raw_table(settings, store):
    empty, _ = run_load(settings)  # nothing landed yet: dlt still creates the raw tables
    land(store, [envelope(customer_event("c1"))])
    load(settings)
    with connect(settings) as con:
        loads = con.sql("select load_id from raw._dlt_loads order by all").fetchall()

    again, summary = run_load(settings)

    raw_keys = {f"raw/{table}" for table in RAW_TABLES}
    for result in (empty, again):
        materialized = {
            m.asset_key.to_user_string() for m in result.asset_materializations_for_node(LOAD_OP)
        }
        assert materialized == raw_keys
    assert len(loads) == 2
    with connect(settings) as con:
        assert con.sql("select load_id from raw._dlt_loads order by all").fetchall() == loads
    assert (summary.objects_loaded, summary.raw_events, summary.customers) == (0, 1, 1)


def test_manifest_lists_each_object_once_with_the_load_that_committed_its_rows(settings, store):
    first = land(store, [envelope(customer_event("c1")), envelope(customer_event("c2"))])
    errors = land(store, [envelope({"code": 500, "endpoint": "x", "message": "m"})], "errors")
    load(settings)
    late = land(store, [envelope(customer_event("c3")), b"{torn"])
    load(settings)
    load(settings)

    manifest = query(
        settings,
        "select landing_file, topic, bytes, lines, _dlt_load_id from raw.landed_objects "
        "order by landing_file",
    )
    sizes = {
        obj.key: obj.size for topic in ("customers", "errors") for obj in store.list_objects(topic)
    }
    assert [row[:4] for row in manifest] == [
        (first, "customers", sizes[first], 2),
        (late, "customers", sizes[late], 2),
        (errors, "errors", sizes[errors], 1),
    ]
    committed_by = dict(
        query(settings, "select distinct landing_file, _dlt_load_id from raw.customer_events")
        + query(settings, "select distinct landing_file, _dlt_load_id from raw.delivery_errors")
    )
    assert {row[0]: row[4] for row in manifest} == committed_by
    assert committed_by[first] == committed_by[errors] != committed_by[late]


def test_duplicate_deliveries_are_kept_in_raw(settings, store):
    event = customer_event("c1")
    land(store, [envelope(event), envelope(event)])
    land(store, [envelope(event)])

    load(settings)

    assert query(settings, "select count(*), count(distinct xid) from raw.customer_events") == [
        (3, 1)
    ]


def test_object_landing_late_with_an_older_name_is_still_loaded(settings, store):
    land(store, [envelope(customer_event("c1"))])
    load(settings)
    # A receiver whose clock is three days behind lands after the first load.
    late_key = land(store, [envelope(customer_event("c2"))], batch_time=days_ago(3), writer="skew")

    summary = load(settings)

    assert summary.objects_loaded == 1
    assert query(
        settings, "select landing_file from raw.customer_events where customer_id = 'c2'"
    ) == [(late_key,)]


def test_gzip_objects_load_like_plain_ones(settings):
    store = LandingStore(settings.landing_url, compression="gzip")
    key = land(store, [envelope(EXAMPLE)])

    load(settings)

    assert key.endswith(".jsonl.gz")
    assert query(settings, "select xid from raw.customer_events") == [(EXAMPLE["xid"],)]


def test_a_damaged_gzip_object_loads_what_decompresses_and_later_loads_go_on(settings, capsys):
    store = LandingStore(settings.landing_url, compression="gzip")
    lines = [envelope(customer_event(f"c-{n}", xid=f"x-{n}")) for n in range(300)]
    truncated_key, not_gzip_key = land(store, lines), land(store, lines[:1])
    intact_key = land(store, lines[:2])
    compressed = (Path(settings.landing_url) / truncated_key).read_bytes()
    truncated = compressed[: len(compressed) // 2]
    (Path(settings.landing_url) / truncated_key).write_bytes(truncated)
    (Path(settings.landing_url) / not_gzip_key).write_bytes(b"not gzip at all\n")
    readable = zlib.decompressobj(wbits=31).decompress(truncated)  # what survives, worked out apart
    assert 0 < readable.count(b"\n") < len(lines)

    levels = [logging.getLogger(name).level for name in PROJECT_LOGGERS]

    first = load(settings)
    warned = capsys.readouterr().err
    again = load(settings)

    # the loader's own warning is among the run's log lines, with its step, and the run
    # leaves the project's logger levels as they were
    assert [
        line
        for line in warned.splitlines()
        if " - WARNING - " in line
        and " - load_landed_objects - " in line
        and f"landed object {truncated_key} is damaged gzip" in line
    ]
    assert [logging.getLogger(name).level for name in PROJECT_LOGGERS] == levels
    assert (first.objects_loaded, again.objects_loaded) == (3, 0)
    assert query(
        settings,
        "select landing_file, count(*) from raw.customer_events group by all order by all",
    ) == sorted([(truncated_key, readable.count(b"\n")), (intact_key, 2)])
    rejected = query(
        settings,
        "select landing_file, reject_reason, line from raw.customer_events_rejected "
        "order by landing_file, line_no",
    )
    marked = [(key, reason) for key, reason, line in rejected if line.startswith("<corrupt gzip> ")]
    assert marked == [
        (key, "object is damaged gzip from here on; the lines before this one were loaded")
        for key in sorted([truncated_key, not_gzip_key])
    ]
    cut_short = readable.rsplit(b"\n", 1)[1]  # the line the damage cut (none if it fell between)
    rejected_in_truncated = [line for key, _, line in rejected if key == truncated_key]
    assert len(rejected_in_truncated) == 1 + bool(cut_short)
    if cut_short:
        assert cut_short.decode(errors="replace") in rejected_in_truncated[0]
    assert len(rejected) == len(rejected_in_truncated) + 1
    assert gzip.decompress(compressed).startswith(readable)


def _loader_lines_in_run_log(settings: Settings, managed: list[str]) -> dict[str, list]:
    """Run the job on one damaged gzip object under an instance that manages the Python
    loggers ``managed``; the run's log entries of the loader's warning and its progress line."""
    store = LandingStore(settings.landing_url, compression="gzip")
    key = land(store, [envelope(customer_event("c1"))])
    (Path(settings.landing_url) / key).write_bytes(b"not gzip at all\n")
    flavours = FlavoursSettings.of(settings)
    job = build_definitions(flavours).resolve_job_def("flavours_job")
    # as an instance in $DAGSTER_HOME with (or without) python_logs in its dagster.yaml
    python_logs = {"python_logs": {"managed_python_loggers": managed}}
    with DagsterInstance.ephemeral(settings=python_logs) as instance:
        result = job.execute_in_process(instance=instance)
        entries = instance.all_logs(result.run_id)
    assert result.success
    found = {
        "warning": f"landed object {key} is damaged gzip",
        "progress": "parsed 1 landed objects",
    }
    return {
        name: [(entry.step_key, entry.level) for entry in entries if text in entry.user_message]
        for name, text in found.items()
    }


@pytest.mark.parametrize(
    "managed",
    [[], list(PROJECT_LOGGERS), ["root"], ["core.landing", "pipelines.landing_source"]],
    ids=["not-managed", "project-managed", "root-managed", "modules-managed"],
)
def test_the_loaders_log_lines_are_in_the_run_log_once_whatever_the_instance_manages(
    settings, managed
):
    handlers = [logging.getLogger(name).handlers[:] for name in PROJECT_LOGGERS]
    levels = [logging.getLogger(name).level for name in PROJECT_LOGGERS]

    lines = _loader_lines_in_run_log(settings, managed)

    assert lines == {
        "warning": [(LOAD_OP, logging.WARNING)],
        "progress": [(LOAD_OP, logging.INFO)],  # FLAVOURS_LOG_LEVEL's default, INFO
    }
    assert [logging.getLogger(name).handlers for name in PROJECT_LOGGERS] == handlers
    assert [logging.getLogger(name).level for name in PROJECT_LOGGERS] == levels


def test_flavours_log_level_sets_which_loader_lines_reach_the_run_log(settings, monkeypatch):
    monkeypatch.setenv("FLAVOURS_LOG_LEVEL", "WARNING")

    lines = _loader_lines_in_run_log(settings, managed=[])

    assert lines == {"warning": [(LOAD_OP, logging.WARNING)], "progress": []}


def test_dlts_connections_start_like_the_warehouses_own_and_keep_dlts_destination_name(
    settings, store
):
    land(store, [envelope(customer_event("c1"))])
    pipeline = make_pipeline(settings)  # opens the warehouse once: signatures checked

    with pipeline.destination_client() as client, client.sql_client as sql:
        config = dict(
            sql.execute_sql(
                "select name, value from duckdb_settings() where name in "
                "('allow_unsigned_extensions', 'autoinstall_known_extensions', "
                "'extension_directory', 'preserve_insertion_order')"
            )
        )

    assert config == {
        "allow_unsigned_extensions": "true",  # not checked again in each of dlt's instances
        "autoinstall_known_extensions": "false",
        "extension_directory": warehouse.lake.extension_directory(),
        "preserve_insertion_order": "false",
    }
    # pipeline state written under dlt's own ducklake destination stays this destination's
    assert pipeline.destination.destination_type == "dlt.destinations.ducklake"
    assert load(settings).raw_events == 1


def test_rows_committed_by_an_interrupted_load_are_not_duplicated(settings, store):
    keys = [land(store, [envelope(customer_event(f"c{i}")) for i in range(5)]) for _ in range(3)]
    # Steps 1-3 of a load commit rows, then the process dies before recording the manifest.
    pipeline = make_pipeline(settings)
    with connect(settings) as con:
        objects = pending_objects(con, store)
    pipeline.run(flavours_landing(settings.landing_url, objects, LoadTally()))
    with connect(settings) as con:  # the writer's view: nothing of this is published
        assert con.sql("select count(*) from raw.customer_events").fetchall() == [(15,)]

    summary = load(settings)

    assert summary.objects_loaded == 3
    assert query(
        settings,
        "select landing_file, count(*), count(distinct line_no) from raw.customer_events "
        "group by all order by 1",
    ) == [(key, 5, 5) for key in sorted(keys)]
    with connect(settings) as con:
        assert discard_partial_loads(con, []) == 0


def _table_snapshot(settings: Settings) -> dict[str, list[tuple]]:
    return {
        "raw": query(
            settings,
            "select landing_file, line_no, xid, action, event_ts, customer_id, payload::varchar "
            "from raw.customer_events order by all",
        ),
        "rejected": query(
            settings,
            "select landing_file, line_no, reject_reason from raw.customer_events_rejected "
            "order by all",
        ),
        "dim": query(settings, "select * from analytics.dim_customer order by all"),
    }


@pytest.mark.slow
def test_load_killed_mid_way_and_rerun_gives_identical_tables(tmp_path, settings, store):
    for batch in range(60):
        events = [
            customer_event(
                f"c{(batch * 7 + i) % 300}",
                action="UPDATE",
                ts_ms=1_700_000_000_000 + batch * 1000 + i,
                name=f"n{batch}",
            )
            for i in range(300)
        ]
        land(store, [envelope(e) for e in events] + [b"{torn"])
    clean = Settings(
        landing_url=settings.landing_url,
        warehouse=str(tmp_path / "clean.sqlite"),
        dlt_dir=str(tmp_path / "clean-dlt"),
    )
    load(clean)
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": settings.landing_url,
        "FLAVOURS_WAREHOUSE": settings.warehouse,
        "FLAVOURS_DLT_DIR": settings.dlt_dir,
    }

    killed_while_running = 0
    for delay in (2.5, 4.0):
        proc = subprocess.Popen(
            [str(VENV_BIN / "flavours"), "load"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=tmp_path,
        )
        time.sleep(delay)
        if proc.poll() is None:
            killed_while_running += 1
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        stop_process(proc)
    load(settings)

    assert killed_while_running >= 1, "the load finished before it could be killed"
    assert _table_snapshot(settings) == _table_snapshot(clean)


def test_bodies_refused_by_the_receiver_reach_the_rejected_table(settings):
    from connector import create_app

    client = create_app({"landing_url": settings.landing_url, "webhook_token": "t"}).test_client()
    answer = client.post(
        "/webhooks/flavours/customers?token=t", data=b"[1]", content_type="application/json"
    )
    assert answer.status_code == 400

    summary = load(settings)

    [(topic, reason, line)] = query(
        settings, "select topic, reject_reason, line from raw.customer_events_rejected"
    )
    assert topic == "customers"
    assert reason.startswith("rejected by the receiver (HTTP 400): body must be a JSON object")
    assert json.loads(line)["body"] == "[1]"
    assert summary.rejected == 1


def test_full_refresh_rebuilds_the_same_tables_as_incremental_loads(settings, store):
    customer = "c-refresh"
    land(store, [envelope(customer_event(customer, ts_ms=1_700_000_000_000, name="A"))])
    load(settings)
    # A late update lands after the first load and belongs between the two versions.
    land(store, [envelope(customer_event(customer, "UPDATE", 1_700_000_200_000, name="C"))])
    land(store, [envelope(customer_event(customer, "UPDATE", 1_700_000_100_000, name="B"))])
    load(settings)
    incremental = _table_snapshot(settings)["dim"]
    batches = "select count(distinct batch_id) from meta.stg_customer_events_loads"
    assert query(settings, batches) == [(2,)]

    load(settings, full_refresh=True)

    assert query(settings, batches) == [(1,)], "a full refresh restages every load at once"
    assert _table_snapshot(settings)["dim"] == incremental
    assert query(settings, "select name from analytics.dim_customer order by valid_from") == [
        ("A",),
        ("B",),
        ("C",),
    ]


def test_an_upgrade_rebuilds_the_derived_tables_and_the_run_says_so(
    tmp_path, monkeypatch, settings, store
):
    land(store, [envelope(customer_event("c-upgrade", ts_ms=1_700_000_000_000, name="A"))])
    load(settings)
    land(store, [envelope(customer_event("c-upgrade", "UPDATE", 1_700_000_100_000, name="B"))])
    load(settings)
    before = _table_snapshot(settings)
    older = runner.MODELS_VERSION - 1
    with warehouse.connect(settings) as con:
        con.execute("update meta.models_version set version = ?", [older])
    # with DAGSTER_HOME set, `flavours load` keeps the run and its logs there
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster-home"))
    (tmp_path / "dagster-home").mkdir()

    result, _ = run_load(settings)

    with DagsterInstance.get() as instance:
        warnings = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.level == logging.WARNING
        ]
    assert [w for w in warnings if f"built by models version {older}, these are" in w], warnings
    (staged,) = result.asset_materializations_for_node(STAGING_OP)
    assert staged.metadata["rebuilt_from_models_version"].value == older
    batches = "select count(distinct batch_id) from meta.stg_customer_events_loads"
    assert query(settings, batches) == [(1,)], "both loads were restaged at once, from raw"
    assert query(settings, "select version from meta.models_version") == [(runner.MODELS_VERSION,)]
    assert _table_snapshot(settings) == before


def test_a_line_with_invalid_utf8_is_rejected_and_its_neighbours_load(settings, store):
    damaged = envelope(customer_event("c-damaged")).replace(b'"Customer', b'"\xff\xfeCustomer')
    damaged = damaged.replace(b'"User 1"', b'"User \xff"')
    land(
        store, [envelope(customer_event("c-before")), damaged, envelope(customer_event("c-after"))]
    )

    load(settings)

    assert query(settings, "select customer_id from raw.customer_events order by line_no") == [
        ("c-before",),
        ("c-after",),
    ]
    [(line_no, reason, line)] = query(
        settings, "select line_no, reject_reason, line from raw.customer_events_rejected"
    )
    assert line_no == 2
    assert reason == "line is not valid UTF-8 (kept with replacement characters)"
    assert line.startswith("<invalid UTF-8> ")
    assert "c-damaged" in line


def test_a_one_shot_load_freezes_the_heap_and_collects_rarely_until_it_exits():
    before = gc.get_threshold()
    try:
        with one_shot_collector():
            assert gc.get_freeze_count() > 0  # what was imported is left alone
            assert gc.get_threshold()[0] == RARE_COLLECTION_THRESHOLD
            assert gc.isenabled()  # cyclic garbage of the run is still collected
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
