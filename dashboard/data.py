"""What the dashboard shows, as queries on the warehouse's reader side (``connect_reader``).

Each function opens its own reader connection, so it sees the last published state and never
blocks or waits for a load. Personal data (name, username, e-mail, phone) is masked unless
``FLAVOURS_DASHBOARD_PERSONAL_DATA`` is true.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from core.logs import mask_personal_data
from core.settings import Settings
from warehouse import CUSTOMER_ATTRIBUTES, connect_reader

BREAKDOWNS = {
    "city": "city",
    "district": "district",
    "language": "lang",
    "gender": "gender",
    "customer type": "customer_type",
    "active": "is_active",
    "verified e-mail": "email_verified_at is not null",
    "verified phone": "phone_verified_at is not null",
}
"""Breakdowns of the current customers: label -> SQL expression over dim_customer_current."""
PERIODS = ("day", "week", "month")
PERSONAL = ("name", "username", "email", "phone")
TIMELINE_ATTRIBUTES = tuple(
    name for name in CUSTOMER_ATTRIBUTES if name not in ("user_id", "created_at")
)


@dataclass(frozen=True)
class Overview:
    customers: int
    active: int
    deleted: int
    first_day: date | None
    last_day: date | None
    last_event_received: datetime | None
    last_load: datetime | None
    rejected_events: int
    delivery_errors: int


def overview(settings: Settings) -> Overview:
    """Counts of the current customer base and how fresh and trustworthy the data is."""
    with connect_reader(settings) as con:
        ((customers, active, deleted),) = con.execute(
            "select count(*), count(*) filter (where not is_deleted), "
            "count(*) filter (where is_deleted) from analytics.dim_customer_current"
        ).fetchall()
        ((first_day, last_day),) = con.execute(
            "select min(day), max(day) from analytics.rpt_customer_daily"
        ).fetchall()
        ((last_event,),) = con.execute(
            "select max(received_at) from raw.customer_events"
        ).fetchall()
        ((last_load,),) = con.execute("select max(loaded_at) from raw.landed_objects").fetchall()
        ((rejected,),) = con.execute("select count(*) from raw.customer_events_rejected").fetchall()
        ((errors,),) = con.execute("select count(*) from raw.delivery_errors").fetchall()
    return Overview(
        customers, active, deleted, first_day, last_day, last_event, last_load, rejected, errors
    )


def daily(settings: Settings, start: date, end: date, period: str) -> list[dict[str, Any]]:
    """New, updated and deleted customers per ``period`` (day, week, month) between ``start``
    and ``end`` (inclusive), and the active customers at the end of each period."""
    if period not in PERIODS:
        raise ValueError(f"period is one of {', '.join(PERIODS)}")
    with connect_reader(settings) as con:
        relation = con.execute(
            """
            select
                date_trunc($period, day)::date as period,
                sum(new_customers)::bigint as new,
                sum(updated_customers)::bigint as updated,
                sum(deleted_customers)::bigint as deleted,
                arg_max(active_customers, day) as active
            from analytics.rpt_customer_daily
            where day between $start and $end
            group by all
            order by period
            """,
            {"period": period, "start": start, "end": end},
        )
        columns = [column[0] for column in relation.description]
        return [dict(zip(columns, row, strict=True)) for row in relation.fetchall()]


def breakdown(settings: Settings, label: str) -> list[tuple[str, int]]:
    """Current, not deleted customers by one attribute, largest group first."""
    expression = BREAKDOWNS[label]
    with connect_reader(settings) as con:
        rows = con.execute(
            f"select coalesce(({expression})::varchar, '(unknown)') as value, count(*) as n "  # noqa: S608 (a fixed expression)
            "from analytics.dim_customer_current where not is_deleted "
            "group by all order by n desc, value"
        ).fetchall()
    return [(value, count) for value, count in rows]


def find_customer(settings: Settings, search: str) -> str | None:
    """The id of the customer whose id, e-mail or phone is ``search`` (its newest version's)."""
    term = search.strip()
    if not term:
        return None
    digits = "".join(ch for ch in term if ch.isdigit())
    with connect_reader(settings) as con:
        found = con.execute(
            """
            select customer_id from analytics.dim_customer
            where customer_id = $term
                or lower(email) = lower($term)
                or ($digits <> '' and (phone = $digits or phone_prefix || phone = $digits))
            order by customer_id = $term desc, valid_from desc
            limit 1
            """,
            {"term": term, "digits": digits},
        ).fetchall()
    return found[0][0] if found else None


def timeline(settings: Settings, customer_id: str, personal_data: bool) -> list[dict[str, Any]]:
    """One customer's versions, oldest first, each with what changed from the one before."""
    columns = ", ".join(TIMELINE_ATTRIBUTES)
    with connect_reader(settings) as con:
        relation = con.execute(
            f"select version, valid_from, valid_to, change_action, is_deleted, {columns} "  # noqa: S608 (fixed names)
            "from analytics.dim_customer where customer_id = ? order by version",
            [customer_id],
        )
        names = [column[0] for column in relation.description]
        versions = [dict(zip(names, row, strict=True)) for row in relation.fetchall()]
    previous: dict[str, Any] = {}
    for version in versions:
        changes = []
        for name in TIMELINE_ATTRIBUTES:
            before, after = previous.get(name), version[name]
            if previous and before != after:
                changes.append(
                    f"{name}: {shown(name, before, personal_data)} → "
                    f"{shown(name, after, personal_data)}"
                )
        version["changes"] = "; ".join(changes) if previous else "first version"
        previous = dict(version)
        for name in PERSONAL:
            version[name] = shown(name, version[name], personal_data)
    return versions


def shown(name: str, value: Any, personal_data: bool) -> str:
    """``value`` as the dashboard shows it: personal data masked unless allowed."""
    if value is None:
        return "∅"
    text = f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, datetime) else str(value)
    if personal_data or name not in PERSONAL:
        return text
    if name == "email":
        return mask_personal_data(text)
    if name in ("phone", "phone_prefix"):
        return "*" * max(len(text) - 2, 0) + text[-2:]
    return text[:1] + "***"
