"""Support for the warehouse tests: Flavours customer events built from the documented example,
and a warehouse whose raw.customer_events is written exactly as the loader writes it.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

import warehouse
from core.settings import Settings

ABSENT = object()
"""Passed as an attribute value to `customer_event`: leave the key out of the payload."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND_MS = 1_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
T0 = 1_705_536_000_000
"""2024-01-18T00:00:00Z in epoch ms: the day of the documented example."""

# tracked attribute -> where Flavours puts it in `data`
ATTRIBUTE_PATHS: dict[str, tuple[str, ...]] = {
    "user_id": ("user", "id"),
    "name": ("user", "name"),
    "username": ("user", "username"),
    "email": ("user", "email"),
    "phone_prefix": ("user", "phone_prefix"),
    "phone": ("user", "phone"),
    "lang": ("user", "lang"),
    "role": ("user", "role"),
    "is_active": ("user", "is_active"),
    "gender": ("gender",),
    "customer_type": ("type",),
    "tax_number": ("tax_number",),
    "crn": ("crn",),
    "zip_code": ("zip_code",),
    "city": ("city",),
    "district": ("district",),
    "street": ("street",),
    "created_at": ("user", "created_at"),
    "email_verified_at": ("user", "email_verified_at"),
    "phone_verified_at": ("user", "phone_verified_at"),
}
ATTRIBUTES = tuple(ATTRIBUTE_PATHS)
TIMESTAMP_ATTRIBUTES = ("created_at", "email_verified_at", "phone_verified_at")
PAYLOAD_PATHS = {**ATTRIBUTE_PATHS, "fcm_token": ("user", "fcm_token")}

DIM_COLUMNS = (
    "customer_sk",
    "customer_id",
    "version",
    "valid_from",
    "valid_to",
    "is_current",
    "is_deleted",
    "change_action",
    "source_xid",
    *ATTRIBUTES,
    "attributes_hash",
)

RAW_DDL = """
create schema if not exists raw;
create table raw.customer_events (
    xid varchar,
    action varchar,
    event_ts timestamptz,
    customer_id varchar,
    payload json,
    received_at timestamptz,
    request_id varchar,
    landing_file varchar,
    line_no bigint,
    _dlt_load_id varchar not null,
    _dlt_id varchar not null
);
"""

RAW_COLUMNS = (
    "xid",
    "action",
    "event_ts",
    "customer_id",
    "payload",
    "received_at",
    "request_id",
    "landing_file",
    "line_no",
    "_dlt_load_id",
    "_dlt_id",
)


def pick(rows: Iterable[dict[str, Any]], *columns: str) -> list[tuple[Any, ...]]:
    """The named columns of each row, as tuples: what a test compares against."""
    return [tuple(row[column] for column in columns) for row in rows]


def md5_hex(text: str) -> str:
    """md5 as the warehouse uses it: a stable key, not security."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def ms_to_datetime(epoch_ms: int) -> datetime:
    """An epoch-milliseconds timestamp as an aware UTC datetime (exact, no float)."""
    return EPOCH + timedelta(milliseconds=epoch_ms)


@dataclass
class Warehouse:
    """A warehouse (a DuckLake in a temp folder) holding raw.customer_events, written to as the
    loader would."""

    settings: Settings
    con: duckdb.DuckDBPyConnection
    _load_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _received: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def deliver(
        self,
        events: Iterable[dict[str, Any]],
        *,
        load_id: str | None = None,
        received_at: Iterable[datetime] | None = None,
        landing_file: str | None = None,
    ) -> str:
        """Insert one load: one raw row per event, as the loader writes them; returns its id."""
        load_id = load_id or f"load-{next(self._load_numbers):06d}"
        landing_file = landing_file or f"customers/dt=2024-01-18/{load_id}.jsonl"
        events = list(events)
        if received_at is None:
            received_at = [
                datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(self._received))
                for _ in events
            ]
        rows = [
            (
                event["xid"],
                event["action"],
                ms_to_datetime(event["timestamp"]),
                event["data"]["id"],
                json.dumps(event),
                delivered_at,
                str(uuid.uuid4()),
                landing_file,
                line_no,
                load_id,
                uuid.uuid4().hex,
            )
            for line_no, (event, delivered_at) in enumerate(
                zip(events, received_at, strict=True), start=1
            )
        ]
        if rows:
            # one insert, one commit: as the loader does, and one DuckLake snapshot per load
            delivered = pa.Table.from_pylist(
                [dict(zip(RAW_COLUMNS, row, strict=True)) for row in rows]
            )
            self.con.register("delivered_rows", delivered)
            try:
                self.con.execute("insert into raw.customer_events by name from delivered_rows")
            finally:
                self.con.unregister("delivered_rows")
        return load_id

    def run(self, full_refresh: bool = False) -> list[warehouse.ModelResult]:
        return warehouse.run_models(self.con, full_refresh=full_refresh)

    def rows(self, table: str, order_by: str = "") -> list[dict[str, Any]]:
        """Every row of a table as dicts, in a stable order."""
        relation = warehouse.relation(self.con, table)
        relation = relation.order(order_by) if order_by else relation.order("all")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]

    def dim(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        """analytics.dim_customer in (customer_id, valid_from) order, optionally one customer."""
        rows = self.rows("analytics.dim_customer", "customer_id, valid_from")
        return [row for row in rows if customer_id is None or row["customer_id"] == customer_id]

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every public table the models maintain."""
        return {
            "staging.stg_customer_events": self.rows("staging.stg_customer_events", "xid"),
            "analytics.dim_customer": self.dim(),
            "analytics.dim_customer_current": self.rows(
                "analytics.dim_customer_current", "customer_id"
            ),
            "analytics.rpt_customer_daily": self.rows("analytics.rpt_customer_daily", "day"),
        }


def build_customer_event(
    example: dict[str, Any],
    customer_id: str,
    action: str = "CREATE",
    ts: int = T0,
    xid: str | None = None,
    user: Any = ...,
    **attributes: Any,
) -> dict[str, Any]:
    """The documented example turned into an event of `customer_id` with fields changed.

    Attributes are named as in dim_customer (`customer_type` is Flavours' `type`); a value of
    ABSENT removes the key; `user=None` sends `"user": null`, `user=ABSENT` drops the object.
    The action is sent as `customers.<action>` unless it already contains a dot.
    """
    event = copy.deepcopy(example)
    event["xid"] = xid or str(uuid.uuid4())
    event["action"] = action if "." in action else f"customers.{action}"
    event["timestamp"] = ts
    event["data"]["id"] = customer_id
    event["data"]["user"]["userable_id"] = customer_id
    for attribute, value in attributes.items():
        *parents, key = PAYLOAD_PATHS[attribute]
        container = event["data"]
        for parent in parents:
            container = container[parent]
        if value is ABSENT:
            container.pop(key, None)
        else:
            container[key] = value
    if user is None:
        event["data"]["user"] = None
    elif user is ABSENT:
        del event["data"]["user"]
    return event
