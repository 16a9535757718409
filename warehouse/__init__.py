"""The warehouse: a DuckLake (`warehouse.lake`) and the SQL models and asset checks that turn
raw.customer_events into the customer dimension (`warehouse.runner`).

Readers: ``from warehouse import connect_reader; con = connect_reader()``.
"""

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

CUSTOMER_ATTRIBUTES = (
    "user_id",
    "name",
    "username",
    "email",
    "phone_prefix",
    "phone",
    "lang",
    "role",
    "is_active",
    "gender",
    "customer_type",
    "tax_number",
    "crn",
    "zip_code",
    "city",
    "district",
    "street",
    "created_at",
    "email_verified_at",
    "phone_verified_at",
)
"""The customer attributes every version of ``analytics.dim_customer`` carries, in column order
(pinned against the table by the SCD2 contract test)."""

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
