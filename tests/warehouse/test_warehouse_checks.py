"""The asset checks pass on tables the models built and fail on deliberately corrupted ones."""

from __future__ import annotations

import pytest
from scd2_support import SECOND_MS, T0

import warehouse


@pytest.fixture
def built(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", T0, "x1", name="A"),
            customer_event("c1", "UPDATE", T0 + SECOND_MS, "x2", name="B"),
            customer_event("c1", "DELETE", T0 + 2 * SECOND_MS, "x3"),
            customer_event("c2", "UPDATE", T0, "x4"),
        ]
    )
    wh.run()
    return wh


def test_checks_pass_on_a_consistent_warehouse(built):
    results = warehouse.run_checks(built.con)

    assert [result.name for result in results] == list(warehouse.CHECKS)
    assert [(result.passed, result.failing_rows, result.sample) for result in results] == [
        (True, 0, [])
    ] * len(warehouse.CHECKS)


@pytest.mark.parametrize(
    ("check", "corruption", "expected_sample"),
    [
        (
            "dim_customer_unique_customer_sk",
            "update analytics.dim_customer set customer_sk = 'same'",
            {"customer_sk": "same", "row_count": 4},
        ),
        (
            "dim_customer_one_current_row_per_customer",
            "update analytics.dim_customer set is_current = true where customer_id = 'c1'",
            {"customer_id": "c1", "current_rows": 3},
        ),
        (
            "dim_customer_one_current_row_per_customer",
            "update analytics.dim_customer set is_current = false where customer_id = 'c2'",
            {"customer_id": "c2", "current_rows": 0},
        ),
        (
            "dim_customer_contiguous_windows",
            "update analytics.dim_customer set valid_to = valid_to + interval 1 millisecond "
            "where customer_id = 'c1' and version = 1",
            {"customer_id": "c1", "version": 1, "problem": "gap or overlap with next version"},
        ),
        (
            "dim_customer_contiguous_windows",
            "update analytics.dim_customer set valid_to = null where customer_id = 'c1'",
            {"customer_id": "c1", "version": 1, "problem": "gap or overlap with next version"},
        ),
        (
            "dim_customer_contiguous_windows",
            "update analytics.dim_customer set version = 7 where customer_id = 'c2'",
            {"customer_id": "c2", "version": 7, "problem": "version out of sequence"},
        ),
        (
            "stg_customer_events_reconciles_with_raw",
            "delete from staging.stg_customer_events where xid = 'x2'",
            {"xid": "x2", "problem": "in raw, not staged"},
        ),
        (
            "stg_customer_events_reconciles_with_raw",
            "insert into staging.stg_customer_events select * from staging.stg_customer_events "
            "where xid = 'x3'",
            {"xid": "x3", "problem": "staged more than once"},
        ),
    ],
)
def test_check_fails_on_corrupted_table(built, check, corruption, expected_sample):
    built.con.execute(corruption)

    result = warehouse.run_check(built.con, check)

    assert not result.passed
    assert result.failing_rows == len(result.sample) >= 1
    first = result.sample[0]
    assert {key: first[key] for key in expected_sample} == expected_sample


def test_unknown_check_names_the_known_ones(built):
    with pytest.raises(ValueError, match="dim_customer_unique_customer_sk"):
        warehouse.run_check(built.con, "no_such_check")
