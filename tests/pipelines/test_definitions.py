"""The Dagster code location: definitions, the sensor on late objects, the dagster CLI."""

from __future__ import annotations

import os

from dagster import AssetKey, DagsterEventType, DagsterInstance, SkipReason, build_sensor_context

from pipelines.automation import new_landed_objects
from pipelines.definitions import build_definitions, defs
from pipelines.resources import FlavoursSettings
from tests.conftest import run_cli
from tests.landing_helpers import EXAMPLE, customer_event, days_ago, envelope, land
from tests.pipelines.conftest import load, query
from warehouse import runner

CONTRACT_ASSETS = {
    "raw/customer_events",
    "raw/customer_events_rejected",
    "raw/delivery_errors",
    "staging/stg_customer_events",
    "analytics/dim_customer",
    "analytics/dim_customer_current",
    "intermediate/int_customer_daily_contributions",
    "analytics/rpt_customer_daily",
}


def test_definitions_resolve_every_job_sensor_schedule_and_asset():
    job = defs.resolve_job_def("flavours_job")
    sensor = defs.resolve_sensor_def("new_landed_objects")
    schedule = defs.resolve_schedule_def("flavours_hourly")
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}

    assert keys >= CONTRACT_ASSETS
    assert sensor.job_name == job.name
    assert schedule.job_name == job.name
    assert schedule.cron_schedule == "0 * * * *"
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == (
        CONTRACT_ASSETS | {"ops/customer_actions"}
    )
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"dim_customer_unique_customer_sk", "no_rejected_events", "no_dead_actions"} <= checks


def test_assets_are_grouped_by_schema_and_described():
    graph = defs.resolve_asset_graph()
    for key in CONTRACT_ASSETS:
        node = graph.get(AssetKey.from_user_string(key))
        assert node.group_name == key.split("/")[0]
        assert node.description


def _evaluate(settings, cursor=None):
    flavours = FlavoursSettings.of(settings)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(
            instance=instance,
            cursor=cursor,
            resources={"flavours": flavours},
            definitions=build_definitions(flavours),
        )
        return new_landed_objects(context)


def test_sensor_requests_a_run_for_new_and_late_objects_only(settings, store):
    empty = _evaluate(settings)
    land(store, [envelope(EXAMPLE)])

    first = _evaluate(settings)
    unchanged = _evaluate(settings, cursor=first.cursor)
    land(store, [envelope(customer_event("late"))], batch_time=days_ago(2), writer="skew")
    late = _evaluate(settings, cursor=first.cursor)

    assert isinstance(empty, SkipReason)
    assert len(first.run_requests) == 1
    assert isinstance(unchanged, SkipReason)
    assert len(late.run_requests) == 1
    assert late.run_requests[0].run_key != first.run_requests[0].run_key


def test_dagster_cli_materializes_everything_from_the_module(tmp_path, settings, store):
    land(store, [envelope(EXAMPLE)])
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": settings.landing_url,
        "FLAVOURS_WAREHOUSE": settings.warehouse,
        "FLAVOURS_DLT_DIR": settings.dlt_dir,
        "DAGSTER_HOME": str(tmp_path),
    }

    result = run_cli(
        "dagster",
        "asset",
        "materialize",
        "-m",
        "pipelines.definitions",
        "--select",
        "*",
        env=env,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert query(settings, "select count(*) from analytics.dim_customer") == [(1,)]
    # every step ran in the run's own process, none in a process of its own
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        (run,) = instance.get_runs()
        starts = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
    assert len(starts) >= len(runner.MODELS) + 1
    assert len({record.dagster_event.pid for record in starts}) == 1


def test_loads_from_a_real_s3_server(s3_env, tmp_path):
    from core.landing import LandingStore
    from core.settings import Settings

    bucket = s3_env.new_bucket()
    settings = Settings(
        landing_url=f"s3://{bucket}/flavours",
        warehouse=str(tmp_path / "w.sqlite"),
        dlt_dir=str(tmp_path / "dlt"),
    )
    store = LandingStore(settings.landing_url)
    land(store, [envelope(EXAMPLE)])
    land(
        store,
        [envelope(customer_event(EXAMPLE["data"]["id"], action="DELETE", ts_ms=1_800_000_000_000))],
    )
    land(store, [envelope({"code": 1, "endpoint": "e", "message": "m"}, "errors")], topic="errors")

    summary = load(settings)
    again = load(settings)

    assert summary.objects_loaded == 3
    assert again.objects_loaded == 0
    assert query(settings, "select count(*) from raw.customer_events") == [(2,)]
    assert query(settings, "select is_deleted from analytics.dim_customer_current") == [(True,)]
