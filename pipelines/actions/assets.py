"""The outbox as a Dagster asset (``ops/customer_actions``, after each run of the models) and a
warning check that lists the dead actions."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset,
    asset_check,
    define_asset_job,
)
from tabulate import tabulate

from pipelines.actions.outbox import dispatch, has_outbox
from pipelines.actions.rules import RulesFileError
from pipelines.automation import project_sensor
from pipelines.resources import FlavoursSettings
from pipelines.run_logs import project_logs_in_run
from warehouse import connect_reader
from warehouse.lake import WarehouseError
from warehouse.runner import MODEL_SPECS

CUSTOMER_ACTIONS = AssetKey(["ops", "customer_actions"])
DEAD_SAMPLE = 20


@asset(
    key=CUSTOMER_ACTIONS,
    # it reads analytics.dim_customer; it comes after every model so that the outbox is
    # published to readers with a finished state of all of them
    deps=[AssetKey(model.table.split(".")) for model in MODEL_SPECS],
    group_name="ops",
    kinds={"duckdb", "smtp", "webhook"},
    description="The outbox: one row per (rule of FLAVOURS_ACTIONS_FILE, customer version); "
    "sends the pending e-mails and webhooks (pipelines.actions.outbox).",
)
def customer_actions(context: AssetExecutionContext, flavours: FlavoursSettings):
    """Plan the new dimension versions and send the due actions."""
    settings = flavours.get()
    if not settings.actions_file:
        return MaterializeResult(metadata={"skipped": "FLAVOURS_ACTIONS_FILE is not set"})
    with project_logs_in_run(context, settings.log_level):
        try:
            report = dispatch(settings)
        except RulesFileError as error:
            raise Failure(str(error)) from None
    context.log.info(report.line())
    metadata: dict = {
        "busy": report.busy,
        "planned": MetadataValue.json(dict(report.planned)),
        "sent_now": report.outcomes.get("sent", 0),
        "failed_now": report.outcomes.get("failed", 0),
        "dead_now": report.outcomes.get("dead", 0),
        "seconds": round(report.seconds, 2),
    }
    with connect_reader(settings) as con:
        if has_outbox(con):
            totals = dict(
                con.execute(
                    "select status, count(*) from ops.customer_actions group by all"
                ).fetchall()
            )
            metadata["outbox_by_status"] = MetadataValue.json(totals)
            metadata["dagster/row_count"] = sum(totals.values())
            recent = con.sql(
                "select action_id, rule, event, customer_id, version, status, attempts, "
                "last_error, updated_at::varchar as updated_at from ops.customer_actions "
                "where status <> 'skipped' order by updated_at desc, action_id limit 10"
            )
            metadata["recent"] = MetadataValue.md(
                tabulate(recent.fetchall(), headers=recent.columns, tablefmt="github")
            )
    return MaterializeResult(metadata=metadata)


@asset_check(
    asset=CUSTOMER_ACTIONS,
    description="Warns when actions are dead (gave up); `flavours actions retry` revives them.",
)
def no_dead_actions(flavours: FlavoursSettings) -> AssetCheckResult:
    settings = flavours.get()
    if not settings.actions_file:
        return AssetCheckResult(passed=True, metadata={"dead": 0, "skipped": "no actions file"})
    with connect_reader(settings) as con:
        if not has_outbox(con):
            return AssetCheckResult(passed=True, metadata={"dead": 0})
        ((dead,),) = con.execute(
            "select count(*) from ops.customer_actions where status = 'dead'"
        ).fetchall()
        sample = con.execute(
            "select action_id, rule, event, customer_id, version, attempts, last_error "
            "from ops.customer_actions where status = 'dead' order by updated_at desc limit ?",
            [DEAD_SAMPLE],
        ).fetchall()
    names = ("action_id", "rule", "event", "customer_id", "version", "attempts", "last_error")
    return AssetCheckResult(
        passed=dead == 0,
        severity=AssetCheckSeverity.WARN,
        description=f"{dead} dead actions",
        metadata={
            "dead": dead,
            "sample": MetadataValue.json(
                [dict(zip(names, map(str, row), strict=True)) for row in sample]
            ),
        },
    )


actions_job = define_asset_job(
    "actions_job",
    selection=AssetSelection.assets(CUSTOMER_ACTIONS),
    description="Send the actions that are due (retries of failed ones, dead ones revived).",
)


@project_sensor(actions_job, "Starts actions_job when outbox rows are due between loads (retries).")
def due_actions(context: SensorEvaluationContext, flavours: FlavoursSettings):
    """Request a dispatch when pending or failed actions are due; one per state of the outbox."""
    settings = flavours.get()
    if not settings.actions_file:
        return SkipReason("FLAVOURS_ACTIONS_FILE is not set")
    try:
        with connect_reader(settings) as con:
            if not has_outbox(con):
                return SkipReason("no outbox yet: the first load creates it")
            ((due, changed),) = con.execute(
                "select count(*) filter (where status in ('pending', 'failed') "
                "and next_attempt_at <= now()), max(updated_at)::varchar "
                "from ops.customer_actions"
            ).fetchall()
    except WarehouseError as error:
        return SkipReason(str(error))
    if not due:
        return SkipReason("no actions are due")
    # the key changes only when the outbox does, so a dispatch that is slow to start is not
    # requested twice
    return RunRequest(run_key=f"due-{changed}", tags={"flavours/due_actions": str(due)})
