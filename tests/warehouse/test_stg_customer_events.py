"""staging.stg_customer_events: one typed row per distinct xid, first delivery wins, loads staged
once each in any order, mistyped values never fail a run."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest
from scd2_support import ABSENT, SECOND_MS, T0, pick

import warehouse
from core.settings import Settings

T1, T2 = T0 + SECOND_MS, T0 + 2 * SECOND_MS


def received(hour: int) -> datetime:
    return datetime(2026, 1, 1, hour, tzinfo=UTC)


def test_one_row_per_xid_first_delivery_wins(wh, customer_event):
    event = customer_event("c1", xid="x1")
    wh.deliver([event, event, event], received_at=[received(9), received(8), received(10)])
    wh.deliver([event], received_at=[received(7)], landing_file="b.jsonl")
    wh.deliver([event], received_at=[received(7)], landing_file="a.jsonl")
    wh.run()

    assert pick(wh.rows("staging.stg_customer_events"), "xid", "received_at", "landing_file") == [
        ("x1", received(7), "a.jsonl")
    ]


def test_earlier_delivery_arriving_in_a_later_load_replaces_the_staged_row(wh, customer_event):
    # a retried delivery whose payload differs shows which delivery won
    wh.deliver([customer_event("c1", xid="x1", name="Later copy")], received_at=[received(9)])
    wh.run()
    wh.deliver([customer_event("c1", xid="x1", name="First copy")], received_at=[received(8)])
    wh.deliver([customer_event("c1", xid="x1", name="Last copy")], received_at=[received(10)])
    wh.run()

    assert pick(wh.rows("staging.stg_customer_events"), "xid", "name", "received_at") == [
        ("x1", "First copy", received(8))
    ]
    assert pick(wh.dim(), "customer_id", "name") == [("c1", "First copy")]
    incremental = wh.snapshot()
    wh.run(full_refresh=True)
    assert wh.snapshot() == incremental


def test_xid_redelivered_for_another_customer_recomputes_both(wh, customer_event):
    wh.deliver([customer_event("c1", xid="x1", name="A")], received_at=[received(9)])
    wh.run()
    wh.deliver([customer_event("c2", xid="x1", name="B")], received_at=[received(8)])
    wh.run()

    assert pick(wh.dim(), "customer_id", "name") == [("c2", "B")]
    incremental = wh.snapshot()
    wh.run(full_refresh=True)
    assert wh.snapshot() == incremental


def test_each_load_is_staged_once_whatever_order_loads_arrive_in(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T1, "x1")], load_id="1700000002.5")
    first = wh.run()
    wh.deliver([customer_event("c1", "UPDATE", T2, "x2", name="B")], load_id="1700000001.5")
    second = wh.run()
    third = wh.run()

    assert [result.rows_written for result in (first[0], second[0], third[0])] == [1, 1, 0]
    staged_loads = wh.con.execute(
        "select _dlt_load_id, batch_id from meta.stg_customer_events_loads order by batch_id"
    ).fetchall()
    assert staged_loads == [("1700000002.5", 1), ("1700000001.5", 2)]
    assert pick(wh.dim("c1"), "version", "name") == [(1, "User 1"), (2, "B")]


def test_action_is_normalised_to_upper_case(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "customers.create", T0, "x1"),
            customer_event("c1", "Customers.Update", T1, "x2"),
            customer_event("c1", "customers.DELETE", T2, "x3"),
        ]
    )
    wh.run()

    assert pick(wh.rows("staging.stg_customer_events"), "xid", "action") == [
        ("x1", "CREATE"),
        ("x2", "UPDATE"),
        ("x3", "DELETE"),
    ]


def test_documented_example_is_typed_and_flattened(wh, example_event):
    wh.deliver([example_event])
    wh.run()

    (row,) = wh.rows("staging.stg_customer_events")
    assert row["xid"] == "9a48c3ad-35e9-4929-b714-6fe30f4afc93"
    assert row["customer_id"] == "c4a868ea-735e-461f-868c-a5d2eaa212d0"
    assert row["action"] == "CREATE"
    assert row["event_ts"] == datetime(2023, 10, 19, 2, 6, 27, 551000, tzinfo=UTC)
    assert pick([row], "user_id", "name", "email", "phone_prefix", "phone", "lang", "role") == [
        (
            "fe4aa1ef-b35c-4e69-be60-fc34ab7447e5",
            "User 1",
            "user1@example.com",
            "966",
            "55223322",
            "en",
            "CUSTOMER",
        )
    ]
    assert row["is_active"] is True
    assert row["created_at"] == datetime(2024, 1, 18, 3, 22, 43, 869000, tzinfo=UTC)
    assert row["customer_type"] is row["username"] is row["email_verified_at"] is None
    assert row["absent_attributes"] == []


def test_mistyped_values_become_null_but_count_as_present(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T0, "x1"),
            customer_event(
                "c1",
                "UPDATE",
                T1,
                "x2",
                created_at="not a time",
                email_verified_at=10**20,
                phone_verified_at="1705548163869",
                is_active="yes",
                phone=55223399,
                name={"first": "Amal"},
                city=ABSENT,
            ),
        ]
    )
    wh.run()

    staged = wh.rows("staging.stg_customer_events", "xid")[1]
    assert pick([staged], "created_at", "email_verified_at", "is_active", "phone", "name") == [
        (None, None, None, "55223399", '{"first":"Amal"}')
    ]
    assert staged["phone_verified_at"] == datetime(2024, 1, 18, 3, 22, 43, 869000, tzinfo=UTC)
    assert staged["absent_attributes"] == ["city"]
    assert pick(wh.dim("c1"), "version", "created_at", "is_active") == [
        (1, datetime(2024, 1, 18, 3, 22, 43, 869000, tzinfo=UTC), True),
        (2, None, None),
    ]


def test_fcm_token_is_never_copied(wh, customer_event):
    wh.deliver([customer_event("c1", fcm_token="secret-device-token")])
    wh.run()

    for rows in wh.snapshot().values():
        assert rows
        assert all(
            "secret-device-token" not in str(value) for row in rows for value in row.values()
        )
    columns = wh.con.execute(
        "select table_schema, table_name, column_name from information_schema.columns "
        "where table_schema in ('staging', 'analytics') and column_name ilike '%fcm%'"
    ).fetchall()
    assert columns == []


def test_missing_raw_table_says_to_load_first(tmp_path):
    con = warehouse.connect(Settings(warehouse=str(tmp_path / "empty.sqlite")))

    with pytest.raises(warehouse.MissingRawEventsError, match="flavours load"):
        warehouse.run_models(con)
    with pytest.raises(duckdb.CatalogException):
        warehouse.relation(con, "staging.stg_customer_events")


def test_raw_row_breaking_the_contract_is_reported_not_fatal(wh, customer_event):
    wh.deliver([customer_event("c1", xid="x-good")], load_id="load-1")
    wh.con.execute(
        "insert into raw.customer_events"
        " (xid, action, event_ts, customer_id, _dlt_load_id, _dlt_id) values"
        " ('x-merge', 'customers.MERGE', now(), 'c1', 'load-1', 'a'),"
        " (null, 'customers.CREATE', now(), 'c1', 'load-1', 'b')"
    )

    wh.run()

    assert pick(wh.dim(), "customer_id", "source_xid") == [("c1", "x-good")]
    reconciliation = warehouse.run_check(wh.con, "stg_customer_events_reconciles_with_raw")
    assert pick(reconciliation.sample, "xid", "problem") == [
        ("x-merge", "in raw, not staged"),
        (None, "in raw, not staged"),
    ]
