"""The warehouse: a DuckLake (`warehouse.lake`) and the SQL models and asset checks that turn
raw.customer_events into the customer dimension (`warehouse.runner`).

Readers: ``from warehouse import connect_reader; con = connect_reader()``.
"""

from warehouse.attributes import CUSTOMER_ATTRIBUTES
from warehouse.lake import WarehouseError, connect, connect_reader
from warehouse.runner import (
    CHECKS,
    MODELS,
    CheckResult,
    MissingRawEventsError,
    ModelResult,
    drop_derived_state,
    relation,
    run_check,
    run_checks,
    run_model,
    run_models,
)

__all__ = [
    "CHECKS",
    "CUSTOMER_ATTRIBUTES",
    "MODELS",
    "CheckResult",
    "MissingRawEventsError",
    "ModelResult",
    "WarehouseError",
    "connect",
    "connect_reader",
    "drop_derived_state",
    "relation",
    "run_check",
    "run_checks",
    "run_model",
    "run_models",
]
