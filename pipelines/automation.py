"""The job, the sensor that starts it when objects land, and the hourly safety-net schedule.

The sensor lists the landing store and compares a digest of every object key with its cursor,
so an object that lands late or with an older name (clock skew between receivers) still
triggers a run: there is no high-water mark to fall behind. The load itself decides what is
new (the manifest), so an extra run costs a listing and models that find no new loads (no
dlt run).
"""

import hashlib

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from core.landing import LandingStore
from core.settings import Settings
from pipelines.loading import list_landed
from pipelines.resources import FlavoursSettings
from warehouse.runner import MODEL_SPECS

SENSOR_INTERVAL_S = Settings().sensor_interval_s

flavours_job = define_asset_job(
    "flavours_job",
    # the raw tables, every model's schema (its asset group), the actions
    selection=AssetSelection.groups(
        "raw", *dict.fromkeys(model.schema for model in MODEL_SPECS), "ops"
    ),
    description="Load new landed objects exactly once, update the customer models, then send "
    "the actions their new versions call for.",
)

hourly_schedule = ScheduleDefinition(
    name="flavours_hourly",
    job=flavours_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Safety net: runs the job every hour even if the sensor missed something.",
)


def landing_digest(keys: list[str]) -> str:
    """A digest that changes whenever any object is added, wherever its name sorts."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(key.encode())
        digest.update(b"\n")
    return f"{len(keys)}-{digest.hexdigest()[:32]}"


def project_sensor(job, description: str):
    """The project's sensors: on by default, evaluated every ``FLAVOURS_SENSOR_INTERVAL_S``."""
    return sensor(
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )


@project_sensor(
    flavours_job, "Starts flavours_job when new objects have landed (late ones included)."
)
def new_landed_objects(context: SensorEvaluationContext, flavours: FlavoursSettings):
    """Request a run when the set of landed objects differs from the last evaluation."""
    settings = flavours.get()
    keys = [obj.key for obj in list_landed(LandingStore(settings.landing_url))]
    if not keys:
        return SkipReason(f"nothing has landed in {settings.landing_url} yet")
    digest = landing_digest(keys)
    if digest == context.cursor:
        return SkipReason(f"no new landed objects ({len(keys)} in total)")
    return SensorResult(
        run_requests=[RunRequest(run_key=digest, tags={"flavours/landed_objects": str(len(keys))})],
        cursor=digest,
    )
