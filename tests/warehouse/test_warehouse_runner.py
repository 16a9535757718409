"""warehouse.runner: models map to their files and tables, run in transactions, in UTC, and their
tables follow their declarations."""

from __future__ import annotations

import duckdb
import jinja2
import pytest
from scd2_support import ATTRIBUTE_PATHS, SECOND_MS, T0, TIMESTAMP_ATTRIBUTES
from scd2_support import ATTRIBUTES as CONTRACT_ATTRIBUTES

import warehouse
from warehouse import runner
from warehouse.attributes import ATTRIBUTES


def test_models_map_to_their_sql_files_and_tables():
    assert warehouse.MODELS == (
        "stg_customer_events",
        "dim_customer",
        "dim_customer_current",
        "int_customer_daily_contributions",
        "rpt_customer_daily",
    )
    assert [runner.model_table(name) for name in warehouse.MODELS] == [
        "staging.stg_customer_events",
        "analytics.dim_customer",
        "analytics.dim_customer_current",
        "intermediate.int_customer_daily_contributions",
        "analytics.rpt_customer_daily",
    ]
    for name in warehouse.MODELS:
        path = runner.model_path(name)
        assert path.read_text().startswith(f"-- {runner.model_table(name)}\n-- Grain: ")


def test_run_models_reports_each_model_with_its_table_and_rows(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T0), customer_event("c2", "DELETE", T0)])

    results = wh.run()

    assert [(r.name, r.table, r.rows, r.rows_written) for r in results] == [
        ("stg_customer_events", "staging.stg_customer_events", 2, 2),
        ("dim_customer", "analytics.dim_customer", 2, 2),
        ("dim_customer_current", "analytics.dim_customer_current", 2, 0),  # a view
        ("int_customer_daily_contributions", "intermediate.int_customer_daily_contributions", 2, 2),
        ("rpt_customer_daily", "analytics.rpt_customer_daily", 1, 1),
    ]
    assert all(r.seconds > 0 for r in results)


def test_tables_have_the_columns_of_their_select_and_not_null_where_declared(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T0)])

    wh.run()  # creates every table
    wh.deliver([customer_event("c1", "UPDATE", T0 + SECOND_MS, name="B")])
    wh.run()  # incremental

    for name in warehouse.MODELS:
        declared = runner.model(name)
        if declared.materialized == "view":
            continue
        schema, table = declared.table.split(".")
        nullable = dict(
            wh.con.execute(
                "select column_name, is_nullable from information_schema.columns "
                "where table_schema = ? and table_name = ?",
                [schema, table],
            ).fetchall()
        )
        assert declared.not_null, name
        assert {column for column, flag in nullable.items() if flag == "NO"} == set(
            declared.not_null
        ), name
        with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
            wh.con.execute(f"update {declared.table} set {declared.not_null[0]} = null")  # noqa: S608


def test_the_state_is_complete_only_when_every_table_has_caught_up_with_staging(wh, customer_event):
    # readers are published a state only when this holds (pipelines.assets.publish_when_complete)
    wh.deliver([customer_event("c1", "CREATE", T0, name="A")])
    wh.run()
    assert runner.derived_state_complete(wh.con)
    wh.deliver([customer_event("c1", "UPDATE", T0 + SECOND_MS, name="B")])
    assert runner.derived_state_complete(wh.con), "new raw rows alone leave the models as they were"

    complete_after = []
    for name in warehouse.MODELS:
        warehouse.run_model(wh.con, name)
        complete_after.append(runner.derived_state_complete(wh.con))

    # the view follows the dimension by itself; every table, the report included, must catch up
    assert complete_after == [False] * (len(warehouse.MODELS) - 1) + [True]
    assert warehouse.MODELS[-1] == "rpt_customer_daily"


def test_failed_model_rolls_back_and_a_later_run_catches_up(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T0, name="A")])
    wh.run()
    before = wh.snapshot()
    wh.deliver([customer_event("c1", "UPDATE", T0 + SECOND_MS, name="B")])
    warehouse.run_model(wh.con, "stg_customer_events")
    wh.con.execute("alter table staging.stg_customer_events rename column name to broken")

    with pytest.raises(Exception, match="name"):
        warehouse.run_model(wh.con, "dim_customer")

    assert wh.dim() == before["analytics.dim_customer"]
    wh.con.execute("alter table staging.stg_customer_events rename column broken to name")
    wh.run()
    assert [row["name"] for row in wh.dim("c1")] == ["A", "B"]


def test_failed_full_refresh_leaves_the_previous_tables(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T0, name="A")])
    wh.run()
    before = wh.snapshot()
    wh.con.execute("alter table raw.customer_events rename column payload to broken")

    with pytest.raises(Exception, match="payload"):
        wh.run(full_refresh=True)

    assert wh.snapshot() == before


def test_runs_in_utc_whatever_the_session_time_zone(wh, customer_event):
    wh.con.execute("set TimeZone = 'Asia/Riyadh'")
    wh.deliver([customer_event("c1", "CREATE", T0 - 1)])  # 23:59:59.999 UTC, 02:59 in Riyadh

    wh.run()

    assert wh.con.execute("select current_setting('TimeZone')").fetchall() == [("UTC",)]
    (row,) = wh.rows("analytics.rpt_customer_daily")
    assert str(row["day"]) == "2024-01-17"


def test_unknown_model_names_the_known_ones(wh):
    with pytest.raises(ValueError, match="stg_customer_events, dim_customer"):
        warehouse.run_model(wh.con, "dim_customers")


def test_drop_derived_state_then_model_by_model_equals_incremental(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T0, name="A")])
    wh.run()
    wh.deliver([customer_event("c1", "UPDATE", T0 - SECOND_MS, name="Z")])
    wh.run()
    incremental = wh.snapshot()

    schemas = "select schema_name from duckdb_schemas() where database_name = current_database()"
    before = {name for (name,) in wh.con.execute(schemas).fetchall()}
    warehouse.drop_derived_state(wh.con)
    after = {name for (name,) in wh.con.execute(schemas).fetchall()}
    assert "raw" in after
    # the schemas the version check looks in are exactly the ones a full refresh drops
    assert before - after == set(runner.DERIVED_SCHEMAS)
    for name in warehouse.MODELS:
        warehouse.run_model(wh.con, name)

    assert wh.snapshot() == incremental


@pytest.mark.parametrize("older_version", [0, 1, 2, 3])
@pytest.mark.parametrize("model_by_model", [False, True])
def test_tables_built_by_an_older_models_version_are_rebuilt_from_raw(
    wh, customer_event, older_version, model_by_model
):
    wh.deliver([customer_event("c1", "CREATE", T0, name="A")])
    wh.run()
    # what older versions left: no intermediate schema and the report's totals in meta (up to
    # version 3), staging with a present_attributes struct (up to version 2) and
    # dim_customer_current a table (up to version 1; version 0 recorded no version)
    wh.con.execute("drop schema intermediate cascade")
    wh.con.execute("create table meta.rpt_customer_daily_totals (day date)")
    staging = "staging.stg_customer_events"
    if older_version < 3:
        wh.con.execute(f"alter table {staging} drop column absent_attributes")
        wh.con.execute(f"alter table {staging} add column present_attributes struct(name boolean)")
    if older_version < 2:
        wh.con.execute("drop view analytics.dim_customer_current")
        wh.con.execute(
            "create table analytics.dim_customer_current as "
            "select * from analytics.dim_customer where is_current"
        )
    if older_version:
        wh.con.execute("update meta.models_version set version = ?", [older_version])
    else:
        wh.con.execute("drop table meta.models_version")
    assert runner.built_by_other_models_version(wh.con) == older_version
    wh.deliver([customer_event("c1", "UPDATE", T0 + SECOND_MS, name="B")])

    if model_by_model:
        results = [warehouse.run_model(wh.con, name) for name in warehouse.MODELS]
    else:
        results = wh.run()

    assert [r.rebuilt_from_version for r in results] == [older_version] + [None] * (
        len(warehouse.MODELS) - 1
    )
    assert runner.built_by_other_models_version(wh.con) is None
    assert wh.con.execute(
        "select table_type from information_schema.tables where table_name = 'dim_customer_current'"
    ).fetchall() == [("VIEW",)]
    assert [row["name"] for row in wh.rows("analytics.dim_customer_current")] == ["B"]
    assert wh.con.execute(
        "select count(*) from information_schema.tables "
        "where table_name = 'rpt_customer_daily_totals'"
    ).fetchall() == [(0,)]
    assert [row["new_customers"] for row in wh.rows("analytics.rpt_customer_daily")] == [1]
    upgraded = wh.snapshot()
    wh.run(full_refresh=True)
    assert wh.snapshot() == upgraded


def test_a_new_warehouse_records_the_models_version(wh, customer_event):
    assert runner.built_by_other_models_version(wh.con) is None  # nothing derived yet
    wh.deliver([customer_event("c1")])

    results = wh.run()

    assert wh.con.execute("select version from meta.models_version").fetchall() == [
        (runner.MODELS_VERSION,)
    ]
    assert runner.built_by_other_models_version(wh.con) is None
    wh.deliver([customer_event("c2")])
    results += wh.run()
    assert {r.rebuilt_from_version for r in results} == {None}, "nothing was rebuilt"
    assert wh.con.execute("select version from meta.models_version").fetchall() == [
        (runner.MODELS_VERSION,)
    ]


def test_the_attribute_list_renders_into_staging_and_the_dimension(wh, customer_event):
    """Names, JSON paths and types against the contract the SCD2 tests use (scd2_support), not
    against warehouse/attributes.py itself, so a wrong entry in the list is caught."""
    wh.deliver([customer_event("c1", "CREATE", T0)])
    wh.run()
    names = list(CONTRACT_ATTRIBUTES)

    assert {a.name: a.json_path for a in ATTRIBUTES} == {
        name: "$.data." + ".".join(path) for name, path in ATTRIBUTE_PATHS.items()
    }
    for table in ("staging.stg_customer_events", "analytics.dim_customer"):
        columns = warehouse.relation(wh.con, table).columns
        start = columns.index(names[0])
        assert columns[start : start + len(names)] == names, table
        types = dict(
            wh.con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema || '.' || table_name = ?",
                [table],
            ).fetchall()
        )
        assert {name: types[name] for name in names} == {
            name: "TIMESTAMP WITH TIME ZONE"
            if name in TIMESTAMP_ATTRIBUTES
            else "BOOLEAN"
            if name == "is_active"
            else "VARCHAR"
            for name in names
        }, table


def test_a_model_with_an_unknown_template_variable_fails_to_render(tmp_path):
    script = tmp_path / "model.sql"
    script.write_text("select {{ attribute }}")

    with pytest.raises(jinja2.UndefinedError, match="attribute"):
        runner.render(script)
