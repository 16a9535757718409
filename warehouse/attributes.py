"""The customer attributes: the one list the models, actions and the dashboard are built from.

Each attribute is a column of staging.stg_customer_events and analytics.dim_customer, in this
order, with its DuckDB type and where a customer event carries it. The models render their
column lists from ``ATTRIBUTES`` (``warehouse.runner``). A version's attributes hash covers the
whole list in this order, so any change to it needs a ``MODELS_VERSION`` bump (a rebuild from
raw).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attribute:
    """One attribute: its column, its DuckDB type, its JSON path in a customer event.

    Types: ``varchar`` (any JSON scalar as text), ``boolean`` (a JSON boolean only, since a
    cast would read "yes" as true) and ``timestamptz`` (epoch milliseconds: an integer or a
    string holding one). A value of the wrong type becomes NULL but still counts as present.
    """

    name: str
    sql_type: str
    json_path: str


def _text(name: str, path: str) -> Attribute:
    return Attribute(name, "varchar", path)


ATTRIBUTES: tuple[Attribute, ...] = (
    _text("user_id", "$.data.user.id"),
    _text("name", "$.data.user.name"),
    _text("username", "$.data.user.username"),
    _text("email", "$.data.user.email"),
    _text("phone_prefix", "$.data.user.phone_prefix"),
    _text("phone", "$.data.user.phone"),
    _text("lang", "$.data.user.lang"),
    _text("role", "$.data.user.role"),
    Attribute("is_active", "boolean", "$.data.user.is_active"),
    _text("gender", "$.data.gender"),
    _text("customer_type", "$.data.type"),
    _text("tax_number", "$.data.tax_number"),
    _text("crn", "$.data.crn"),
    _text("zip_code", "$.data.zip_code"),
    _text("city", "$.data.city"),
    _text("district", "$.data.district"),
    _text("street", "$.data.street"),
    Attribute("created_at", "timestamptz", "$.data.user.created_at"),
    Attribute("email_verified_at", "timestamptz", "$.data.user.email_verified_at"),
    Attribute("phone_verified_at", "timestamptz", "$.data.user.phone_verified_at"),
)

CUSTOMER_ATTRIBUTES: tuple[str, ...] = tuple(attribute.name for attribute in ATTRIBUTES)
"""The attribute names in column order (pinned against the table by the SCD2 contract test)."""
