"""Run the warehouse's SQL models and asset checks against a DuckDB database.

A model is one SQL script, `warehouse/models/<schema>/<table>.sql`, that creates its table if
needed and brings it up to date; `MODEL_SPECS` lists them in dependency order, with the tables
each reads. A script is Jinja over DuckDB SQL: its column lists loop over ``attributes``, the
customer attributes of ``warehouse.attributes``, so the list is written once. The runner renders
each script once per process and executes it statement by statement inside one transaction (all
or nothing), with the session time zone set to UTC. A check is one query,
`warehouse/checks/<name>.sql`, that returns the offending rows; it passes when it returns none.

The first model records `MODELS_VERSION` in meta.models_version; when it finds derived tables
built by another version, it drops them first, so that they are rebuilt from raw, and its result
says so (`ModelResult.rebuilt_from_version`).

The SQL is DuckDB's, run against the warehouse's DuckLake (`warehouse.lake`); the macros the
models share are Jinja (`macros.sql`, as ``macros.<name>``), so nothing is created in the
catalog or the session for them. Reads no settings: callers pass an open connection
(`warehouse.connect`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import jinja2

from warehouse.attributes import ATTRIBUTES

PACKAGE_DIR = Path(__file__).parent
MODELS_DIR = PACKAGE_DIR / "models"
CHECKS_DIR = PACKAGE_DIR / "checks"
FULL_REFRESH_SQL = PACKAGE_DIR / "maintenance" / "drop_derived_state.sql"
MACROS_SQL = PACKAGE_DIR / "macros.sql"


@dataclass(frozen=True)
class Model:
    """One SQL model: its script's name, the tables it reads, what its table holds."""

    name: str
    reads: tuple[str, ...]
    description: str


MODEL_SPECS: tuple[Model, ...] = (
    Model(
        "stg_customer_events",
        ("raw.customer_events",),
        "One row per distinct xid (first delivery wins), typed and flattened.",
    ),
    Model(
        "dim_customer",
        ("staging.stg_customer_events",),
        "SCD type 2 customer dimension by event time: one row per customer version.",
    ),
    Model(
        "dim_customer_current",
        ("analytics.dim_customer",),
        "One row per customer: its current version (deleted ones included).",
    ),
    Model(
        "rpt_customer_daily",
        ("analytics.dim_customer",),
        "One row per UTC day: new, updated, deleted and active customers.",
    ),
)
"""The models in dependency order, with their lineage (the Dagster assets are built from it)."""
MODELS: tuple[str, ...] = tuple(model.name for model in MODEL_SPECS)

CHECKS: tuple[str, ...] = (
    "dim_customer_unique_customer_sk",
    "dim_customer_one_current_row_per_customer",
    "dim_customer_contiguous_windows",
    "stg_customer_events_reconciles_with_raw",
)

RAW_TABLE = "raw.customer_events"

INCREMENTAL_MODELS: tuple[str, ...] = ("stg_customer_events", "dim_customer", "rpt_customer_daily")
"""The models that keep a watermark in meta.model_watermarks (dim_customer_current is a view)."""

MODELS_VERSION = 3
"""The version of the models' tables. Bump it when a model changes in a way that its existing
tables cannot follow incrementally (a table becomes a view, a column changes): the first run on
a warehouse built by another version rebuilds staging, analytics and meta from raw, which
derives them completely. Version 2: analytics.dim_customer_current is a view. Version 3:
staging lists absent_attributes instead of a present_attributes struct."""

DERIVED_SCHEMAS = ("staging", "analytics", "meta")
"""The schemas the models derive from raw: the ones `maintenance/drop_derived_state.sql` drops."""

_PARSED: dict[Path, tuple[duckdb.Statement, ...]] = {}
_TEMPLATES = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - renders SQL, not HTML
)


class MissingRawEventsError(RuntimeError):
    """raw.customer_events does not exist yet, so there is nothing to stage."""


@dataclass(frozen=True)
class ModelResult:
    """What one model run did: its table, rows in it afterwards, rows its last insert wrote, and
    the models version whose derived tables it dropped to rebuild them from raw (None: it found
    none to drop; only ever set on the first model)."""

    name: str
    table: str
    rows: int
    rows_written: int
    seconds: float
    rebuilt_from_version: int | None = None


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one asset check: passed when the check query returned no rows."""

    name: str
    passed: bool
    failing_rows: int
    sample: list[dict[str, Any]]


def relation(con: duckdb.DuckDBPyConnection, table: str) -> duckdb.DuckDBPyRelation:
    """The relation of ``table`` (``schema.table``) in the connection's default database."""
    return con.sql("from " + ".".join(f'"{part}"' for part in table.split(".")))


def use_utc(con: duckdb.DuckDBPyConnection) -> None:
    """Make dates and timestamps render and truncate in UTC on this connection."""
    con.execute("set TimeZone = 'UTC'")


def model_path(name: str) -> Path:
    """The SQL file of model `name`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the models are: {', '.join(MODELS)}")
    (path,) = MODELS_DIR.glob(f"*/{name}.sql")
    return path


def model_table(name: str) -> str:
    """The table model `name` maintains, as `schema.table`."""
    return f"{model_path(name).parent.name}.{name}"


def check_path(name: str) -> Path:
    """The SQL file of check `name`."""
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; the checks are: {', '.join(CHECKS)}")
    return CHECKS_DIR / f"{name}.sql"


def run_model(con: duckdb.DuckDBPyConnection, name: str) -> ModelResult:
    """Bring one model's table up to date in its own transaction (rolled back on error)."""
    model_path(name)  # an unknown name fails before anything runs
    use_utc(con)
    started = time.perf_counter()
    with _transaction(con):
        rows_written, rebuilt_from = _run_model_script(con, name)
    return _model_result(con, name, rows_written, started, rebuilt_from)


def run_models(con: duckdb.DuckDBPyConnection, full_refresh: bool = False) -> list[ModelResult]:
    """Run every model in order; `full_refresh` first drops staging, analytics and meta.

    An incremental run commits model by model. A full refresh (asked for, or because another
    models version built the derived tables) is one transaction: until it commits, readers keep
    seeing the previous tables, and a failure leaves them as they were.
    """
    use_utc(con)
    built_by = built_by_other_models_version(con)
    if not full_refresh and built_by is None:
        return [run_model(con, name) for name in MODELS]
    results = []
    with _transaction(con):
        _execute_script(con, FULL_REFRESH_SQL)
        for name in MODELS:
            started = time.perf_counter()
            rows_written, _ = _run_model_script(con, name)
            rebuilt_from = built_by if name == MODELS[0] else None
            results.append(_model_result(con, name, rows_written, started, rebuilt_from))
    return results


def drop_derived_state(con: duckdb.DuckDBPyConnection) -> None:
    """Drop staging, analytics and meta (never raw), so that the next run rebuilds everything."""
    with _transaction(con):
        _execute_script(con, FULL_REFRESH_SQL)


def built_by_other_models_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The models version that built this warehouse's derived tables, when it is not
    `MODELS_VERSION` (0: built before versions were recorded); None when they are current or
    do not exist yet."""
    version = recorded_models_version(con)
    return None if version == MODELS_VERSION else version


def recorded_models_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The models version that built this warehouse's derived tables (0: built before versions
    were recorded); None when there are none yet."""
    ((derived, versioned),) = con.execute(
        "select count(*), count(*) filter (where table_name = 'models_version') "
        "from information_schema.tables "
        "where table_catalog = current_database() and list_contains(?, table_schema)",
        [list(DERIVED_SCHEMAS)],
    ).fetchall()
    if not derived:
        return None
    if not versioned:
        return 0
    ((version,),) = con.execute("select max(version) from meta.models_version").fetchall()
    return version


def derived_state_complete(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every incremental model has consumed the staging batches staging has, so that
    staging and analytics show one state (true before the first model run)."""
    try:
        watermarks = dict(
            con.execute("select model, batch_id from meta.model_watermarks").fetchall()
        )
    except duckdb.CatalogException:
        return True
    return len({watermarks.get(model_table(name), 0) for name in INCREMENTAL_MODELS}) == 1


def run_check(con: duckdb.DuckDBPyConnection, name: str, sample_size: int = 5) -> CheckResult:
    """Run one asset check and return how many rows offend, with a few of them."""
    # One execution: a relation would run the query again for the count and for the sample.
    offending = con.sql(check_path(name).read_text()).to_arrow_table()
    sample = offending.slice(0, sample_size).to_pylist()
    return CheckResult(
        name=name, passed=offending.num_rows == 0, failing_rows=offending.num_rows, sample=sample
    )


def run_checks(con: duckdb.DuckDBPyConnection) -> list[CheckResult]:
    """Run every asset check."""
    return [run_check(con, name) for name in CHECKS]


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.begin()
    try:
        yield
    except BaseException:
        con.rollback()
        raise
    con.commit()


def _run_model_script(con: duckdb.DuckDBPyConnection, name: str) -> tuple[int, int | None]:
    """Run one model's script; return its rows written and the models version whose derived
    tables it dropped first (the first model only, when another version built them)."""
    if name != MODELS[0]:
        return _execute_script(con, model_path(name)), None
    _require_raw_events(con)
    recorded = recorded_models_version(con)
    rebuilt_from = None
    if recorded not in (None, MODELS_VERSION):
        _execute_script(con, FULL_REFRESH_SQL)
        rebuilt_from = recorded
    rows_written = _execute_script(con, model_path(name))
    if recorded != MODELS_VERSION:
        con.execute("create table if not exists meta.models_version (version integer not null)")
        con.execute("delete from meta.models_version")
        con.execute("insert into meta.models_version values (?)", [MODELS_VERSION])
    return rows_written, rebuilt_from


def _model_result(
    con: duckdb.DuckDBPyConnection,
    name: str,
    rows_written: int,
    started: float,
    rebuilt_from_version: int | None,
) -> ModelResult:
    table = model_table(name)
    ((rows,),) = relation(con, table).count("*").fetchall()
    return ModelResult(
        name=name,
        table=table,
        rows=rows,
        rows_written=rows_written,
        seconds=time.perf_counter() - started,
        rebuilt_from_version=rebuilt_from_version,
    )


def _execute_script(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Execute every statement of a SQL file; return the row count of its last insert (by
    convention a model's last insert writes its own table)."""
    rows_written = 0
    for statement in _statements(con, path):
        result = con.execute(statement).fetchall()
        if statement.type == duckdb.StatementType.INSERT:
            rows_written = result[0][0]
    return rows_written


def render(path: Path) -> str:
    """A SQL file as DuckDB runs it: its Jinja rendered with ``attributes`` (the customer
    attributes of ``warehouse.attributes``, in column order) and ``macros`` (``macros.sql``)."""
    macros = _TEMPLATES.from_string(MACROS_SQL.read_text()).module
    return _TEMPLATES.from_string(path.read_text()).render(attributes=ATTRIBUTES, macros=macros)


def _statements(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[duckdb.Statement, ...]:
    """The statements of a SQL file, rendered and split once per process (package data)."""
    if path not in _PARSED:
        _PARSED[path] = tuple(con.extract_statements(render(path)))
    return _PARSED[path]


def _require_raw_events(con: duckdb.DuckDBPyConnection) -> None:
    try:
        relation(con, RAW_TABLE)
    except duckdb.CatalogException as error:
        raise MissingRawEventsError(
            f"{RAW_TABLE} does not exist in this database: load the landed events first "
            "(`flavours load`), then run the models."
        ) from error
