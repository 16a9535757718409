"""SQL models and asset checks that turn raw.customer_events into the customer dimension.

See `warehouse.runner` for how the `.sql` files under `models/` and `checks/` are run.
"""

from warehouse.runner import (
    CHECKS,
    MODELS,
    CheckResult,
    MissingRawEventsError,
    ModelResult,
    connect,
    drop_derived_state,
    run_check,
    run_checks,
    run_model,
    run_models,
)

__all__ = [
    "CHECKS",
    "MODELS",
    "CheckResult",
    "MissingRawEventsError",
    "ModelResult",
    "connect",
    "drop_derived_state",
    "run_check",
    "run_checks",
    "run_model",
    "run_models",
]
