"""Fixtures for pipeline tests: a temp landing folder and warehouse, and a load runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.landing import LandingStore
from core.settings import Settings
from pipelines.run import LoadSummary, run_load
from warehouse import connect_reader


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        landing_url=str(tmp_path / "landing"),
        warehouse=str(tmp_path / "warehouse.sqlite"),
        dlt_dir=str(tmp_path / "dlt"),
    )


@pytest.fixture
def store(settings: Settings) -> LandingStore:
    return LandingStore(settings.landing_url)


def load(settings: Settings, full_refresh: bool = False) -> LoadSummary:
    """One real in-process Dagster run of the whole job."""
    result, summary = run_load(settings, full_refresh=full_refresh)
    assert result.success
    return summary


def query(settings: Settings, sql: str) -> list[tuple]:
    """``sql``'s rows, as a reader sees the warehouse (its last published state)."""
    with connect_reader(settings) as con:
        return con.sql(sql).fetchall()
