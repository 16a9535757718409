"""``flavours load``: run the whole job once, in process, and summarise what it did.

Runs are recorded in ``$DAGSTER_HOME`` when it is set (so ``dagster dev`` shows them), else in
a throwaway instance.
"""

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import DagsterInstance, ExecuteInProcessResult

from core.logs import PROJECT_LOGGERS
from core.settings import Settings
from pipelines.actions.assets import customer_actions
from pipelines.assets import model_assets, raw_tables
from pipelines.definitions import build_definitions
from pipelines.resources import FlavoursSettings
from warehouse import connect_reader

LOAD_OP = raw_tables.op.name
STAGING_OP = model_assets[0].op.name
"""The first model's op, which takes the full-refresh config."""
ACTIONS_OP = customer_actions.op.name


@dataclass(frozen=True)
class LoadSummary:
    """What one load did and what the warehouse holds afterwards."""

    objects_loaded: int
    lines_loaded: int
    raw_events: int
    rejected: int
    delivery_errors: int
    staged_events: int
    versions: int
    customers: int
    checks_failed: list[str]
    actions: str | None = None
    """What the outbox step did, when FLAVOURS_ACTIONS_FILE is set."""

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        return [
            f"landed objects loaded   {self.objects_loaded:>12,}  ({self.lines_loaded:,} lines)",
            f"raw.customer_events     {self.raw_events:>12,}",
            f"rejected lines          {self.rejected:>12,}",
            f"delivery errors         {self.delivery_errors:>12,}",
            f"distinct events staged  {self.staged_events:>12,}",
            f"dim_customer versions   {self.versions:>12,}  ({self.customers:,} customers)",
            "checks                  "
            + (
                "all passed"
                if not self.checks_failed
                else "FAILED: " + ", ".join(self.checks_failed)
            ),
            *([f"actions                 {self.actions}"] if self.actions else []),
        ]


RARE_COLLECTION_THRESHOLD = 50_000
"""Container allocations between two young-generation collections during a one-shot load
(Python's default is 700)."""


@contextmanager
def one_shot_collector() -> Iterator[None]:
    """The garbage collector for a process that runs one load and exits (``flavours load``,
    the benchmark): Dagster's and dlt's long-lived objects are frozen, and the run's own garbage
    is collected rarely (frequent passes held the GIL the parse workers wait for). Not for
    long-lived processes: frozen objects are never freed. Figures: docs/benchmarks.md.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(RARE_COLLECTION_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.freeze()


def run_load(
    settings: Settings, full_refresh: bool = False
) -> tuple[ExecuteInProcessResult, LoadSummary]:
    """Materialize every asset once (checks included) and summarise."""
    flavours = FlavoursSettings.of(settings)
    job = build_definitions(flavours).resolve_job_def("flavours_job")
    run_config = {
        "ops": {STAGING_OP: {"config": {"full_refresh": full_refresh}}},
        # Dagster's console logger prints every engine event at DEBUG; FLAVOURS_LOG_LEVEL rules.
        "loggers": {"console": {"config": {"log_level": settings.log_level.upper()}}},
    }
    instance = (
        DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    )
    with instance:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=True
        )
    return result, summarise(settings, result)


def failure_reason(exc: BaseException) -> str:
    """One line saying why a load failed, from the exception ``run_load`` raised.

    dlt and Dagster wrap the cause in long messages of their own. This follows the chain of
    explicit causes (``raise ... from``, and dlt's ``PipelineStepFailed.exception``) and names
    the first exception this project's packages raised (a ``LandingError`` names the object it
    could not read), else the innermost one.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        inner = getattr(current, "exception", None)  # dlt's PipelineStepFailed keeps it here
        current = current.__cause__ or (inner if isinstance(inner, BaseException) else None)
    # the project's loggers are named after its packages
    ours = [error for error in chain if type(error).__module__.split(".")[0] in PROJECT_LOGGERS]
    reason = ours[0] if ours else chain[-1]
    text = " ".join(str(reason).split()) or "(no message)"
    return f"{type(reason).__name__}: {text}"


def summarise(settings: Settings, result: ExecuteInProcessResult) -> LoadSummary:
    """Counts from the run's materializations and the warehouse."""
    loaded = {"landed_objects_loaded": 0, "lines_loaded": 0}
    for materialization in result.asset_materializations_for_node(LOAD_OP):
        if materialization.asset_key.path == ["raw", "customer_events"]:
            loaded = {key: materialization.metadata[key].value for key in loaded}
    actions = None
    for materialization in result.asset_materializations_for_node(ACTIONS_OP):
        metadata = {key: value.value for key, value in materialization.metadata.items()}
        if "skipped" not in metadata:
            actions = (
                f"sent {metadata['sent_now']:,}, failed {metadata['failed_now']:,}, "
                f"dead {metadata['dead_now']:,} (outbox: "
                + ", ".join(
                    f"{n:,} {s}" for s, n in sorted(metadata.get("outbox_by_status", {}).items())
                )
                + ")"
            )
    failed = [
        evaluation.check_name
        for evaluation in result.get_asset_check_evaluations()
        if not evaluation.passed and evaluation.severity.value == "ERROR"
    ]
    with connect_reader(settings) as con:

        def count(sql: str) -> int:
            ((value,),) = con.sql(sql).fetchall()
            return value

        return LoadSummary(
            objects_loaded=int(loaded["landed_objects_loaded"]),
            lines_loaded=int(loaded["lines_loaded"]),
            raw_events=count("select count(*) from raw.customer_events"),
            rejected=count("select count(*) from raw.customer_events_rejected"),
            delivery_errors=count("select count(*) from raw.delivery_errors"),
            staged_events=count("select count(*) from staging.stg_customer_events"),
            versions=count("select count(*) from analytics.dim_customer"),
            customers=count("select count(*) from analytics.dim_customer_current"),
            checks_failed=failed,
            actions=actions,
        )
