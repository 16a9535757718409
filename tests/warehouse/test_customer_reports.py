"""analytics.dim_customer_current and analytics.rpt_customer_daily on a small history checked by
hand.

    day 1  c1 CREATE 10:00, c1 UPDATE 12:00
    day 2  c3 UPDATE 10:00 (never created), c3 DELETE 11:00, c2 CREATE 23:59:59.999
    day 3  c1 UPDATE 00:00:00.000
    day 4  nothing
    day 5  c1 DELETE 08:00, c3 CREATE 12:00 (re-opens)
"""

from __future__ import annotations

from datetime import date

import pytest
from scd2_support import DAY_MS, DIM_COLUMNS, HOUR_MS, T0, pick


def day(n: int, hours: float = 0) -> int:
    return T0 + (n - 1) * DAY_MS + int(hours * HOUR_MS)


@pytest.fixture
def history(wh, customer_event):
    wh.deliver(
        [
            customer_event("c1", "CREATE", day(1, 10), name="A"),
            customer_event("c1", "UPDATE", day(1, 12), name="B"),
            customer_event("c3", "UPDATE", day(2, 10), name="X"),
            customer_event("c3", "DELETE", day(2, 11), name="X"),
            customer_event("c2", "CREATE", day(3) - 1, name="M"),
            customer_event("c1", "UPDATE", day(3), name="C"),
            customer_event("c1", "DELETE", day(5, 8), name="C"),
            customer_event("c3", "CREATE", day(5, 12), name="Y"),
        ]
    )
    wh.run()
    return wh


def test_dim_customer_current_has_each_customers_current_version(history):
    rows = history.rows("analytics.dim_customer_current", "customer_id")

    assert pick(rows, "customer_id", "version", "is_deleted", "change_action", "name") == [
        ("c1", 4, True, "DELETE", "C"),
        ("c2", 1, False, "CREATE", "M"),
        ("c3", 3, False, "CREATE", "Y"),
    ]
    assert rows == [row for row in history.dim() if row["is_current"]]
    assert tuple(rows[0]) == DIM_COLUMNS


def test_rpt_customer_daily_counts_each_day_from_first_to_last_version(history):
    assert pick(
        history.rows("analytics.rpt_customer_daily", "day"),
        "day",
        "new_customers",
        "updated_customers",
        "deleted_customers",
        "active_customers",
    ) == [
        (date(2024, 1, 18), 1, 1, 0, 1),
        (date(2024, 1, 19), 2, 0, 1, 2),
        (date(2024, 1, 20), 0, 1, 0, 2),
        (date(2024, 1, 21), 0, 0, 0, 2),
        (date(2024, 1, 22), 0, 1, 1, 2),
    ]


def test_reports_follow_late_events(history, customer_event):
    history.deliver([customer_event("c2", "DELETE", day(4, 1), name="M")])
    history.run()

    assert pick(history.rows("analytics.rpt_customer_daily", "day"), "day", "active_customers")[
        -2:
    ] == [(date(2024, 1, 21), 1), (date(2024, 1, 22), 1)]
    current = history.rows("analytics.dim_customer_current", "customer_id")
    assert pick(current, "customer_id", "is_deleted") == [("c1", True), ("c2", True), ("c3", False)]


def test_reports_are_empty_without_events(wh):
    wh.run()

    assert wh.rows("analytics.rpt_customer_daily") == []
    assert wh.rows("analytics.dim_customer_current") == []
