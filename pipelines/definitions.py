"""The one Dagster ``Definitions`` of the connector (``workspace.yaml`` loads this module).

Run it with ``dagster dev`` (UI, sensor, schedule) or once with
``dagster asset materialize -m pipelines.definitions --select '*'`` or ``flavours load``.
Settings are resolved at run time from ``FLAVOURS_*`` (see README).
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor
from dagster_dlt import DagsterDltResource

from pipelines.actions.assets import actions_job, customer_actions, due_actions, no_dead_actions
from pipelines.assets import customers_snapshot, landing_assets, model_assets, raw_tables
from pipelines.automation import flavours_job, hourly_schedule, new_landed_objects
from pipelines.checks import dimension_checks, input_warnings
from pipelines.resources import FlavoursSettings


def build_definitions(flavours: FlavoursSettings | None = None) -> Definitions:
    """The connector's definitions; tests and ``flavours load`` pass explicit settings."""
    return Definitions(
        assets=[*landing_assets, customers_snapshot, raw_tables, *model_assets, customer_actions],
        asset_checks=[dimension_checks, input_warnings, no_dead_actions],
        jobs=[flavours_job, actions_job],
        sensors=[new_landed_objects, due_actions],
        schedules=[hourly_schedule],
        resources={"dlt": DagsterDltResource(), "flavours": flavours or FlavoursSettings()},
        # Steps run one after another in the run's own process: they take turns on the
        # warehouse's writer lock anyway, and a process per step would import the project
        # again for each of them (seconds per step, most of a small run under `dagster dev`).
        executor=in_process_executor,
    )


defs = build_definitions()
