"""Asset checks: structural errors on the customer dimension, warnings on bad input.

The error checks (unique ``customer_sk``, one current row per customer, contiguous windows,
raw-to-staging reconciliation) are the warehouse's SQL checks (``warehouse/checks``), each on
the asset of the model its file names. The
warnings (rejected events present, delivery errors reported by Flavours) never block
anything: one bad event must never stop the dimension.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    multi_asset_check,
)

from pipelines.loading import warehouse_lock
from pipelines.resources import FlavoursSettings
from warehouse import lake, runner

REJECTED = AssetKey(["raw", "customer_events_rejected"])
DELIVERY_ERRORS = AssetKey(["raw", "delivery_errors"])


@multi_asset_check(
    specs=[
        AssetCheckSpec(
            name=check.name,
            asset=AssetKey(runner.model_table(check.model).split(".")),
            description=check.description,
        )
        for check in runner.CHECK_SPECS
    ],
    can_subset=True,
)
def dimension_checks(context: AssetCheckExecutionContext, flavours: FlavoursSettings):
    """Run the warehouse's structural checks; a failure is an error with offending rows."""
    settings = flavours.get()
    with warehouse_lock(settings), lake.connect(settings) as con:
        for check_key in context.selected_asset_check_keys:
            result = runner.run_check(con, check_key.name)
            yield AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=check_key.name,
                passed=result.passed,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "failing_rows": result.failing_rows,
                    "sample": MetadataValue.json(_jsonable(result.sample)),
                },
            )


WARNING_CHECKS = {
    "no_rejected_events": (
        REJECTED,
        "raw.customer_events_rejected",
        "landed lines that are not valid customer events (see reject_reason)",
    ),
    "no_delivery_errors": (
        DELIVERY_ERRORS,
        "raw.delivery_errors",
        "delivery failures Flavours reported through its error webhook",
    ),
}


@multi_asset_check(
    specs=[
        AssetCheckSpec(name=name, asset=key, description=f"Warns on {description}.")
        for name, (key, _, description) in WARNING_CHECKS.items()
    ],
    can_subset=True,
)
def input_warnings(context: AssetCheckExecutionContext, flavours: FlavoursSettings):
    """Warn (never block) when rejected events or delivery errors are present."""
    settings = flavours.get()
    with warehouse_lock(settings), lake.connect(settings) as con:
        for check_key in context.selected_asset_check_keys:
            _, table, description = WARNING_CHECKS[check_key.name]
            relation = runner.relation(con, table)
            ((rows,),) = relation.count("*").fetchall()
            yield AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=check_key.name,
                passed=rows == 0,
                severity=AssetCheckSeverity.WARN,
                description=f"{rows} {description}",
                metadata={"rows": rows},
            )


def _jsonable(rows: list[dict]) -> list[dict]:
    return [{key: str(value) for key, value in row.items()} for row in rows]
