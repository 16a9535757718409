"""Property test: any event stream, split into loads delivered in any order with duplicates and
an incremental run after each load, gives the same tables as a full rebuild, and dim_customer,
dim_customer_current and rpt_customer_daily equal to the small reference implementation below
(rules 1-8 of DESIGN.md section 4).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scd2_support import (
    ABSENT,
    ATTRIBUTE_PATHS,
    ATTRIBUTES,
    DAY_MS,
    DIM_COLUMNS,
    HOUR_MS,
    T0,
    TIMESTAMP_ATTRIBUTES,
    md5_hex,
    ms_to_datetime,
)

ACTION_RANK = {"SNAPSHOT": 0, "CREATE": 1, "UPDATE": 2, "DELETE": 3}

# few customers and instants, so that ties, re-creations and no-op events are common;
# the instants cross midnight so that rpt_customer_daily sees several days
CUSTOMERS = ("c1", "c2", "c3")
INSTANTS = (T0, T0 + HOUR_MS, T0 + DAY_MS - 1, T0 + DAY_MS, T0 + 3 * DAY_MS)
ACTIONS = (
    "customers.CREATE",
    "customers.update",
    "Customers.Update",
    "customers.DELETE",
    "customers.SNAPSHOT",  # the backfill's (pipelines/backfill.py)
)
VARIED = {
    "name": st.sampled_from(["Amal", "Noor", None]),
    "email": st.sampled_from(["a@example.com", None]),
    "city": st.sampled_from(["Riyadh", "Jeddah", None]),
    "customer_type": st.sampled_from(["individual", None]),
    "is_active": st.sampled_from([True, False, None, "yes"]),
    "created_at": st.sampled_from([1705548163869, 0, None, "not a time", "1705548163869", 10**17]),
}
SNAPSHOT_CREATED_AT = st.sampled_from([T0 - 2 * DAY_MS, T0 + HOUR_MS // 2, T0 + 5 * DAY_MS, None])
"""A snapshot's created_at, which can date its customer's first version: kept near the instants
(a created_at of 0 would make the daily report span 55 years)."""


# -- the reference implementation ------------------------------------------------------------------


def present_attributes(event: dict[str, Any]) -> dict[str, Any]:
    """The tracked attributes whose key is in the payload, typed as the warehouse types them."""
    found = {}
    for attribute, path in ATTRIBUTE_PATHS.items():
        container: Any = event["data"]
        for key in path[:-1]:
            container = container.get(key) if isinstance(container, dict) else None
        if isinstance(container, dict) and path[-1] in container:
            found[attribute] = typed(attribute, container[path[-1]])
    return found


def typed(attribute: str, value: Any) -> Any:
    if attribute == "is_active":
        return value if isinstance(value, bool) else None
    if attribute in TIMESTAMP_ATTRIBUTES:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        try:
            return ms_to_datetime(value)
        except OverflowError:
            return None
    return value


def attributes_hash(state: dict[str, Any]) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return (value - ms_to_datetime(0)) // ms_to_datetime(0).resolution
        return value

    text = json.dumps([plain(state[a]) for a in ATTRIBUTES], separators=(",", ":"))
    return md5_hex(text)


def reference_dim_customer(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dim_customer computed the obvious way from the distinct events (one per xid)."""
    distinct = events
    rows = []
    for customer_id in sorted({event["data"]["id"] for event in distinct}):
        history = sorted(
            (
                (event["timestamp"], ACTION_RANK[event["action"].split(".")[1].upper()], event)
                for event in distinct
                if event["data"]["id"] == customer_id
            ),
            key=lambda item: (item[0], item[1], item[2]["xid"]),
        )
        if history and history[0][1] == ACTION_RANK["SNAPSHOT"]:
            # a snapshot that is the first event stands for the customer since its created_at
            ts, rank, event = history[0]
            created_at = present_attributes(event).get("created_at")
            if created_at is not None:
                created_ms = (created_at - ms_to_datetime(0)) // timedelta(milliseconds=1)
                history[0] = (min(ts, created_ms), rank, event)
        state = dict.fromkeys(ATTRIBUTES)
        instants: list[dict[str, Any]] = []  # the state after the last event of each instant
        for ts, rank, event in history:
            state.update(present_attributes(event))
            after = {
                "ts": ts,
                "state": dict(state),
                "is_deleted": rank == ACTION_RANK["DELETE"],
                "change_action": event["action"].split(".")[1].upper(),
                "source_xid": event["xid"],
            }
            if instants and instants[-1]["ts"] == ts:
                instants[-1] = after
            else:
                instants.append(after)
        versions = []
        for previous, instant in zip([None, *instants], instants, strict=False):
            if previous is None or (previous["state"], previous["is_deleted"]) != (
                instant["state"],
                instant["is_deleted"],
            ):
                versions.append(instant)
        for number, (version, following) in enumerate(
            zip(versions, [*versions[1:], None], strict=True), start=1
        ):
            rows.append(
                {
                    "customer_sk": md5_hex(f"{customer_id}|{version['ts'] * 1000}"),
                    "customer_id": customer_id,
                    "version": number,
                    "valid_from": ms_to_datetime(version["ts"]),
                    "valid_to": following and ms_to_datetime(following["ts"]),
                    "is_current": following is None,
                    "is_deleted": version["is_deleted"],
                    "change_action": version["change_action"],
                    "source_xid": version["source_xid"],
                    **version["state"],
                    "attributes_hash": attributes_hash(version["state"]),
                }
            )
    return rows


def reference_rpt_customer_daily(dim: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """rpt_customer_daily counted day by day from the reference dim_customer."""
    if not dim:
        return []
    start_days = {row["valid_from"].date() for row in dim}
    rows = []
    day = min(start_days)
    while day <= max(start_days):
        starting = [row for row in dim if row["valid_from"].date() == day]
        in_force_at_end = {}  # customer -> its last version starting before the next midnight
        for row in dim:
            if row["valid_from"].date() <= day:
                in_force_at_end[row["customer_id"]] = row
        rows.append(
            {
                "day": day,
                "new_customers": len({r["customer_id"] for r in starting if r["version"] == 1}),
                "updated_customers": len(
                    {r["customer_id"] for r in starting if r["version"] > 1 and not r["is_deleted"]}
                ),
                "deleted_customers": len({r["customer_id"] for r in starting if r["is_deleted"]}),
                "active_customers": sum(not row["is_deleted"] for row in in_force_at_end.values()),
            }
        )
        day += timedelta(days=1)
    return rows


# -- the generated histories -----------------------------------------------------------------------


@st.composite
def event_payloads(draw, example: dict[str, Any]) -> dict[str, Any]:
    """One customer event: the documented example, some attributes changed, absent or null."""
    event = json.loads(json.dumps(example))
    event["data"]["id"] = draw(st.sampled_from(CUSTOMERS))
    event["action"] = draw(st.sampled_from(ACTIONS))
    event["timestamp"] = draw(st.sampled_from(INSTANTS))
    for attribute, values in VARIED.items():
        value = draw(st.one_of(st.just(ABSENT), values))
        *parents, key = ATTRIBUTE_PATHS[attribute]
        container = event["data"]
        for parent in parents:
            container = container[parent]
        if value is ABSENT:
            del container[key]
        else:
            container[key] = value
    if event["action"].endswith("SNAPSHOT"):
        event["data"]["user"]["created_at"] = draw(SNAPSHOT_CREATED_AT)
    user = draw(st.sampled_from(["kept", "kept", "kept", "null", "absent"]))
    if user == "null":
        event["data"]["user"] = None
    elif user == "absent":
        del event["data"]["user"]
    return event


Delivery = tuple[dict[str, Any], datetime]
Load = tuple[str, list[Delivery]]


@st.composite
def deliveries(draw, example: dict[str, Any]) -> list[Load]:
    """Distinct events, each delivered one to three times, split into loads in arrival order.

    A re-delivery is sometimes not byte-identical (a retried xid whose payload changed), so
    which delivery comes first (received_at, landing file, line) shows in the tables.
    """
    events = draw(st.lists(event_payloads(example), min_size=1, max_size=12))
    xids = draw(st.lists(st.uuids(), min_size=len(events), max_size=len(events), unique=True))
    copies = []
    for event, xid in zip(events, xids, strict=True):
        event["xid"] = str(xid)
        copies.append(event)
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                copies.append(event)
            else:
                variant = json.loads(json.dumps(event))
                variant["data"]["name"] = f"variant {len(copies)}"
                copies.append(variant)
    copies = draw(st.permutations(copies))
    load_count = draw(st.integers(1, min(3, len(copies))))
    load_ids = draw(
        st.lists(st.integers(0, 999), min_size=load_count, max_size=load_count, unique=True)
    )
    loads: list[list[Delivery]] = [[] for _ in range(load_count)]
    for event in copies:
        received_at = ms_to_datetime(T0 + 10 * DAY_MS + draw(st.integers(0, 3)) * 1000)
        loads[draw(st.integers(0, load_count - 1))].append((event, received_at))
    return [(f"load-{load_id:03d}", load) for load_id, load in zip(load_ids, loads, strict=True)]


def first_deliveries(loads: list[Load]) -> list[dict[str, Any]]:
    """Per xid, the event of its first delivery by (received_at, landing file, line)."""
    ordered = sorted(
        (received_at, f"{load_id}.jsonl", line_no, event)
        for load_id, load in loads
        for line_no, (event, received_at) in enumerate(load, start=1)
    )
    first: dict[str, dict[str, Any]] = {}
    for *_, event in ordered:
        first.setdefault(event["xid"], event)
    return list(first.values())


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_incremental_loads_equal_full_rebuild_and_reference(data, new_warehouse, example_event):
    loads = data.draw(deliveries(example_event))
    wh = new_warehouse()
    for load_id, load in loads:
        events = [event for event, _ in load]
        wh.deliver(
            events,
            load_id=load_id,
            received_at=[received for _, received in load],
            landing_file=f"{load_id}.jsonl",
        )
        wh.run()
    incremental = wh.snapshot()

    wh.run(full_refresh=True)

    assert wh.snapshot() == incremental
    expected = reference_dim_customer(first_deliveries(loads))
    assert [tuple(row) for row in expected] == [DIM_COLUMNS] * len(expected)
    assert incremental["analytics.dim_customer"] == expected
    assert incremental["analytics.dim_customer_current"] == [
        row for row in expected if row["is_current"]
    ]
    assert incremental["analytics.rpt_customer_daily"] == reference_rpt_customer_daily(expected)
    wh.con.close()
