"""The eight semantic rules of analytics.dim_customer (DESIGN.md section 4), a test or more each."""

from __future__ import annotations

from scd2_support import (
    ABSENT,
    ATTRIBUTES,
    DIM_COLUMNS,
    SECOND_MS,
    T0,
    md5_hex,
    ms_to_datetime,
    pick,
)

import warehouse

T1, T2, T3, T4, T5 = (T0 + n * SECOND_MS for n in range(1, 6))


def at(epoch_ms: int):
    return ms_to_datetime(epoch_ms)


def test_versions_follow_event_time_not_arrival_order(wh, customer_event):
    wh.deliver([customer_event("c1", "UPDATE", T2, "x-update", name="Second")])
    wh.run()
    wh.deliver([customer_event("c1", "CREATE", T1, "x-create", name="First")])
    wh.run()

    assert pick(wh.dim("c1"), "version", "valid_from", "valid_to", "change_action", "name") == [
        (1, at(T1), at(T2), "CREATE", "First"),
        (2, at(T2), None, "UPDATE", "Second"),
    ]


def test_same_instant_ties_order_create_update_delete_then_xid(wh, customer_event):
    wh.deliver(
        [
            # one instant, delivered in the reverse of the order they apply in
            customer_event("c1", "DELETE", T1, "a-delete", name=ABSENT, city=ABSENT),
            customer_event("c1", "UPDATE", T1, "b-update", name="Updated", city=ABSENT),
            customer_event("c1", "CREATE", T1, "c-create", name="Created", city="Riyadh"),
            # two updates of one instant: the xid orders them, the last one decides
            customer_event("c2", "CREATE", T1, "x-create", name="Created"),
            customer_event("c2", "UPDATE", T2, "u2", name="Second"),
            customer_event("c2", "UPDATE", T2, "u1", name="First"),
        ]
    )
    wh.run()

    columns = ("version", "valid_from", "is_deleted", "change_action", "source_xid", "name", "city")
    assert pick(wh.dim("c1"), *columns) == [
        (1, at(T1), True, "DELETE", "a-delete", "Updated", "Riyadh"),
    ]
    assert pick(wh.dim("c2"), *columns) == [
        (1, at(T1), False, "CREATE", "x-create", "Created", None),
        (2, at(T2), False, "UPDATE", "u2", "Second", None),
    ]


def test_absent_key_keeps_previous_value_but_explicit_null_clears_it(wh, customer_event):
    wh.deliver(
        [
            customer_event(
                "c1", "CREATE", T1, name="Amal", email="amal@example.com", city="Riyadh"
            ),
            customer_event(
                "c1", "UPDATE", T2, name=ABSENT, email=None, city=ABSENT, customer_type=ABSENT
            ),
        ]
    )
    wh.run()

    assert pick(wh.dim("c1"), "version", "name", "email", "city") == [
        (1, "Amal", "amal@example.com", "Riyadh"),
        (2, "Amal", None, "Riyadh"),
    ]


def test_null_or_absent_user_object_keeps_every_user_attribute(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, name="Amal", city="Riyadh"),
            customer_event("c1", "UPDATE", T2, user=None, city="Jeddah"),
            customer_event("c1", "UPDATE", T3, user=ABSENT, city="Dammam"),
        ]
    )
    wh.run()

    rows = wh.dim("c1")
    assert pick(rows, "version", "city", "name", "email") == [
        (1, "Riyadh", "Amal", "user1@example.com"),
        (2, "Jeddah", "Amal", "user1@example.com"),
        (3, "Dammam", "Amal", "user1@example.com"),
    ]
    assert rows[2]["user_id"] == rows[0]["user_id"] == "fe4aa1ef-b35c-4e69-be60-fc34ab7447e5"
    assert rows[2]["created_at"] == rows[0]["created_at"] is not None


def test_event_that_changes_nothing_adds_no_version(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, name="Amal"),
            customer_event("c1", "UPDATE", T2, name="Amal"),  # same payload, new xid
            customer_event("c1", "UPDATE", T3, name="Amal", fcm_token="new-device"),  # untracked
            customer_event("c1", "UPDATE", T4, name="Noor"),
            customer_event("c1", "UPDATE", T5, name="Amal"),  # a change back is a change
        ]
    )
    wh.run()

    assert pick(wh.dim("c1"), "version", "valid_from", "name") == [
        (1, at(T1), "Amal"),
        (2, at(T4), "Noor"),
        (3, at(T5), "Amal"),
    ]


def test_delete_opens_tombstone_and_later_create_reopens(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, name="Amal", city="Riyadh"),
            customer_event("c1", "DELETE", T2, name="Amal", city=ABSENT),
            customer_event("c1", "DELETE", T3, name="Amal", city=ABSENT),  # no change
            customer_event("c1", "CREATE", T4, name="Amal again", city=ABSENT),
            customer_event("c1", "DELETE", T5, name="Amal again", city=ABSENT),
        ]
    )
    wh.run()

    columns = ("version", "valid_from", "valid_to", "is_current", "is_deleted", "change_action")
    assert pick(wh.dim("c1"), *columns, "name", "city") == [
        (1, at(T1), at(T2), False, False, "CREATE", "Amal", "Riyadh"),
        (2, at(T2), at(T4), False, True, "DELETE", "Amal", "Riyadh"),
        (3, at(T4), at(T5), False, False, "CREATE", "Amal again", "Riyadh"),
        (4, at(T5), None, True, True, "DELETE", "Amal again", "Riyadh"),
    ]


def test_update_after_delete_reopens_the_customer(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1),
            customer_event("c1", "DELETE", T2),
            customer_event("c1", "UPDATE", T3),  # same attributes: only the deleted state changes
        ]
    )
    wh.run()

    assert pick(wh.dim("c1"), "version", "is_deleted", "change_action", "is_current") == [
        (1, False, "CREATE", False),
        (2, True, "DELETE", False),
        (3, False, "UPDATE", True),
    ]


def test_late_update_is_inserted_between_versions(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, name="A"),
            customer_event("c1", "UPDATE", T3, name="C"),
        ]
    )
    wh.run()
    first_sk = wh.dim("c1")[0]["customer_sk"]

    wh.deliver([customer_event("c1", "UPDATE", T2, name="B")])
    wh.run()

    rows = wh.dim("c1")
    assert pick(rows, "version", "valid_from", "valid_to", "is_current", "name") == [
        (1, at(T1), at(T2), False, "A"),
        (2, at(T2), at(T3), False, "B"),
        (3, at(T3), None, True, "C"),
    ]
    assert rows[0]["customer_sk"] == first_sk


def test_late_event_can_make_a_later_event_a_no_op(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, name="A"),
            customer_event("c1", "UPDATE", T3, name="B"),
        ]
    )
    wh.run()
    wh.deliver([customer_event("c1", "UPDATE", T2, "x-late", name="B")])
    wh.run()

    assert pick(wh.dim("c1"), "version", "valid_from", "valid_to", "source_xid", "name") == [
        (1, at(T1), at(T2), wh.dim("c1")[0]["source_xid"], "A"),
        (2, at(T2), None, "x-late", "B"),
    ]


def test_several_changes_in_one_load_are_all_kept(wh, customer_event):
    wh.deliver([customer_event("c1", "UPDATE", t, name=f"name at {t}") for t in (T4, T2, T3, T1)])
    wh.run()

    assert pick(wh.dim("c1"), "version", "valid_from", "name") == [
        (n, at(t), f"name at {t}") for n, t in enumerate((T1, T2, T3, T4), start=1)
    ]


def test_update_for_never_created_customer_starts_history(wh, customer_event):
    wh.deliver([customer_event("c1", "UPDATE", T2, "x-update", name="Existing")])
    wh.run()

    assert pick(
        wh.dim("c1"), "version", "valid_from", "is_current", "is_deleted", "change_action", "name"
    ) == [(1, at(T2), True, False, "UPDATE", "Existing")]


def test_delete_for_never_created_customer_starts_history_with_a_tombstone(wh, customer_event):
    wh.deliver([customer_event("c1", "DELETE", T2, name="Gone")])
    wh.run()

    assert pick(wh.dim("c1"), "version", "is_current", "is_deleted", "change_action", "name") == [
        (1, True, True, "DELETE", "Gone")
    ]


def test_duplicate_deliveries_and_replays_give_same_rows(new_warehouse, customer_event):
    events = [
        customer_event("c1", "CREATE", T1, name="A"),
        customer_event("c1", "UPDATE", T2, name="B"),
        customer_event("c1", "DELETE", T3, name=ABSENT),
        customer_event("c2", "UPDATE", T2, name="X"),
        customer_event("c2", "UPDATE", T2, email=None),
    ]
    once = new_warehouse()
    once.deliver(events)
    once.run()

    replayed = new_warehouse()
    replayed.deliver([events[4], events[2], events[2]])
    replayed.run()
    replayed.deliver([events[3], events[0], events[4]])
    replayed.deliver([events[1], events[1]])
    replayed.run()
    replayed.deliver(events)  # a full replay
    replayed.run()

    assert replayed.dim() == once.dim()
    assert len(once.dim()) == 4


def test_incremental_runs_equal_full_rebuild(wh, customer_event):
    loads = [
        [customer_event("c1", "CREATE", T1, name="A"), customer_event("c2", "CREATE", T1)],
        [customer_event("c1", "UPDATE", T3, name="C"), customer_event("c3", "DELETE", T2)],
        [customer_event("c1", "UPDATE", T2, name="B"), customer_event("c2", "DELETE", T4)],
        [customer_event("c2", "CREATE", T5, name="Back"), customer_event("c3", "UPDATE", T1)],
    ]
    for load in loads:
        wh.deliver(load)
        wh.run()
    incremental = wh.snapshot()

    wh.run(full_refresh=True)

    assert wh.snapshot() == incremental
    assert len(incremental["analytics.dim_customer"]) == 8


def test_incremental_run_recomputes_only_customers_with_new_events(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, name="A"),
            customer_event("c1", "UPDATE", T2, name="B"),
            customer_event("c2", "CREATE", T1, name="X"),
        ]
    )
    wh.run()
    rowids_before = dict(
        wh.con.execute("select customer_sk, rowid from analytics.dim_customer").fetchall()
    )

    wh.deliver([customer_event("c2", "UPDATE", T3, name="Y")])
    staging, dim, *_ = wh.run()

    rowids_after = dict(
        wh.con.execute("select customer_sk, rowid from analytics.dim_customer").fetchall()
    )
    c1_sks = [row["customer_sk"] for row in wh.dim("c1")]
    c2_sks = [row["customer_sk"] for row in wh.dim("c2")]
    assert {sk: rowids_after[sk] for sk in c1_sks} == {sk: rowids_before[sk] for sk in c1_sks}
    assert all(rowids_after[sk] not in rowids_before.values() for sk in c2_sks)
    assert (staging.rows_written, dim.rows_written, dim.rows) == (1, 2, 4)

    nothing_new = wh.run()
    assert [result.rows_written for result in nothing_new[:2]] == [0, 0]
    assert (
        dict(wh.con.execute("select customer_sk, rowid from analytics.dim_customer").fetchall())
        == rowids_after
    )


def test_dim_customer_has_exactly_the_contract_columns(wh, customer_event):
    wh.deliver([customer_event("c1")])
    wh.run()

    for table in ("analytics.dim_customer", "analytics.dim_customer_current"):
        assert tuple(warehouse.relation(wh.con, table).columns) == DIM_COLUMNS
    assert warehouse.CUSTOMER_ATTRIBUTES == ATTRIBUTES  # what actions and the dashboard read


def test_customer_sk_is_md5_of_customer_id_and_valid_from(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T1 + 7)])
    wh.run()

    (row,) = wh.dim("c1")
    epoch_us = (T1 + 7) * 1000
    assert row["customer_sk"] == md5_hex(f"c1|{epoch_us}")


# -- backfill snapshots (customers.SNAPSHOT, pipelines/backfill.py) --------------------------------

DAY_BEFORE = T0 - 86_400_000


def test_a_first_snapshot_starts_the_history_at_created_at(wh, customer_event):
    wh.deliver([customer_event("c1", "SNAPSHOT", T5, "s1", name="Amal", created_at=DAY_BEFORE)])
    wh.run()

    assert pick(wh.dim("c1"), "version", "valid_from", "valid_to", "change_action", "name") == [
        (1, at(DAY_BEFORE), None, "SNAPSHOT", "Amal"),
    ]
    # counted new on the day it was created, not on the day the backfill saw it
    assert pick(wh.rows("analytics.rpt_customer_daily"), "day", "new_customers") == [
        (at(DAY_BEFORE).date(), 1),
    ]


def test_a_first_snapshot_without_created_at_starts_at_its_observation(wh, customer_event):
    wh.deliver([customer_event("c1", "SNAPSHOT", T5, "s1", created_at=None)])
    wh.run()

    assert pick(wh.dim("c1"), "version", "valid_from", "change_action") == [
        (1, at(T5), "SNAPSHOT"),
    ]


def test_a_snapshot_equal_to_the_webhooks_state_adds_no_version(wh, customer_event):
    wh.deliver([customer_event("c1", "CREATE", T1, "w1", name="Amal", created_at=T1)])
    wh.run()
    before = wh.dim("c1")
    wh.deliver([customer_event("c1", "SNAPSHOT", T4, "s1", name="Amal", created_at=T1)])
    wh.run()

    assert wh.dim("c1") == before
    assert pick(before, "version", "change_action", "source_xid") == [(1, "CREATE", "w1")]


def test_a_snapshot_that_differs_adds_a_snapshot_version_at_its_observation(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, "w1", name="Amal", created_at=T1),
            customer_event("c1", "SNAPSHOT", T4, "s1", name="Amal Q", created_at=T1),
        ]
    )
    wh.run()

    assert pick(wh.dim("c1"), "version", "valid_from", "valid_to", "change_action", "name") == [
        (1, at(T1), at(T4), "CREATE", "Amal"),
        (2, at(T4), None, "SNAPSHOT", "Amal Q"),
    ]


def test_a_later_webhook_wins_over_an_older_snapshot_whatever_arrives_first(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "UPDATE", T4, "w2", name="Webhook"),
            # the same instant: the webhook applies after the snapshot
            customer_event("c2", "UPDATE", T3, "w3", name="Webhook"),
        ]
    )
    wh.run()
    wh.deliver(
        [
            customer_event("c1", "SNAPSHOT", T3, "s1", name="Snapshot", created_at=T1),
            customer_event("c2", "SNAPSHOT", T3, "s2", name="Snapshot", created_at=T1),
        ]
    )
    wh.run()

    current = {row["customer_id"]: row for row in wh.rows("analytics.dim_customer_current")}
    assert current["c1"]["name"] == current["c2"]["name"] == "Webhook"
    assert pick(wh.dim("c1"), "valid_from", "change_action", "name") == [
        (at(T1), "SNAPSHOT", "Snapshot"),
        (at(T4), "UPDATE", "Webhook"),
    ]
    # c2's snapshot is its first event, so it dates the customer from created_at
    assert pick(wh.dim("c2"), "valid_from", "change_action", "name") == [
        (at(T1), "SNAPSHOT", "Snapshot"),
        (at(T3), "UPDATE", "Webhook"),
    ]


def test_a_snapshot_after_a_delete_reopens_the_customer(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T1, "w1", name="Amal", created_at=T1),
            customer_event("c1", "DELETE", T2, "w2", name="Amal", created_at=T1),
            customer_event("c1", "SNAPSHOT", T3, "s1", name="Amal", created_at=T1),
        ]
    )
    wh.run()

    assert pick(wh.dim("c1"), "version", "is_deleted", "change_action") == [
        (1, False, "CREATE"),
        (2, True, "DELETE"),
        (3, False, "SNAPSHOT"),
    ]
