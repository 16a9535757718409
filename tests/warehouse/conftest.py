"""Fixtures for the warehouse tests: fresh DuckDB warehouses and the customer event builder."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pytest
from scd2_support import RAW_DDL, Warehouse, build_customer_event

import warehouse
from core.settings import Settings


@pytest.fixture(scope="session")
def new_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Warehouse]]:
    """Factory of empty warehouses, each a fresh DuckLake in its own folder holding the raw table
    (usable from hypothesis tests, where a function-scoped fixture would be shared between
    examples)."""
    opened: list[duckdb.DuckDBPyConnection] = []

    def make() -> Warehouse:
        folder = tmp_path_factory.mktemp("warehouse")
        settings = Settings(warehouse=str(folder / "warehouse.sqlite"))
        con = warehouse.connect(settings)
        opened.append(con)
        for statement in con.extract_statements(RAW_DDL):
            con.execute(statement)
        return Warehouse(settings=settings, con=con)

    yield make
    for con in opened:
        con.close()


@pytest.fixture
def wh(new_warehouse: Callable[[], Warehouse]) -> Warehouse:
    """An empty warehouse of its own."""
    return new_warehouse()


@pytest.fixture(scope="session")
def customer_event(example_event: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """`customer_event(customer_id, action="CREATE", ts=T0, xid=None, user=..., **attributes)`:
    the documented example with fields changed (see `scd2_support.build_customer_event`)."""
    return functools.partial(build_customer_event, example_event)
