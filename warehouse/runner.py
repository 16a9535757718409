"""Run the warehouse's SQL models and asset checks against a DuckDB database.

A model is one select, `warehouse/models/<schema>/<table>.sql`: a Jinja template over DuckDB SQL,
in the manner of dbt. It declares what it is with ``config(materialized=..., description=...,
unique_key=..., not_null=[...])`` and names what it reads with ``ref('<model>')`` and
``source('raw', '<table>')``; the lineage and the order the models run in follow from those.
Its column lists loop over ``attributes`` (the customer attributes of ``warehouse.attributes``),
so the list is written once. ``warehouse.materializations`` turns the select into the statements
that create or update the model's table; the runner executes them inside one transaction (all or
nothing), with the session time zone set to UTC. A check is one query,
`warehouse/checks/<name>.sql`, that returns the offending rows (it passes when it returns none)
and declares the model it checks with ``config(model=..., description=...)``.

The first model records `MODELS_VERSION` in meta.models_version; when it finds derived tables
built by another version, it drops them first, so that they are rebuilt from raw, and its result
says so (`ModelResult.rebuilt_from_version`).

The SQL is DuckDB's, run against the warehouse's DuckLake (`warehouse.lake`). Reads no settings:
callers pass an open connection (`warehouse.connect`).
"""

from __future__ import annotations

import functools
import graphlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import jinja2

from warehouse import materializations
from warehouse.attributes import ATTRIBUTES

PACKAGE_DIR = Path(__file__).parent
MODELS_DIR = PACKAGE_DIR / "models"
CHECKS_DIR = PACKAGE_DIR / "checks"
FULL_REFRESH_SQL = PACKAGE_DIR / "maintenance" / "drop_derived_state.sql"

MATERIALIZATIONS = ("view", "table", "incremental")
CONFIG_OPTIONS = ("materialized", "description", "unique_key", "not_null")
RAW_TABLE = "raw.customer_events"
SOURCES = (RAW_TABLE,)


@dataclass(frozen=True)
class Model:
    """One SQL model, as its file declares it."""

    name: str
    schema: str
    path: Path
    materialized: str
    description: str
    refs: tuple[str, ...]
    """The tables of the models it reads (``ref``), as ``schema.table``."""
    sources: tuple[str, ...]
    """The raw tables it reads (``source``)."""
    unique_key: str | None = None
    not_null: tuple[str, ...] = ()

    @property
    def table(self) -> str:
        """The table (or view) the model maintains, as ``schema.table``."""
        return f"{self.schema}.{self.name}"

    @property
    def reads(self) -> tuple[str, ...]:
        """Every table the model reads: its sources, then the models it refers to."""
        return self.sources + self.refs

    @property
    def reads_source(self) -> bool:
        return bool(self.sources)

    @property
    def keeps_watermark(self) -> bool:
        """Whether its table records, in meta.model_watermarks, the last staging batch it
        reflects (every incremental model, and a table over models; a view reflects its
        upstream)."""
        return self.materialized == "incremental" or (
            self.materialized == "table" and bool(self.refs)
        )


@dataclass(frozen=True)
class Check:
    """One check: a query returning offending rows, and the model whose asset it checks."""

    name: str
    path: Path
    model: str
    description: str
    reads: tuple[str, ...]


class ModelDeclarationError(ValueError):
    """A model or check file declares something the runner cannot run (named in the message)."""


_TEMPLATES = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - renders SQL, not HTML
)


@functools.cache
def _model_files() -> dict[str, Path]:
    """Each model's file by model name (package data: listed once per process)."""
    return {path.stem: path for path in sorted(MODELS_DIR.glob("*/*.sql"))}


@functools.cache
def _model_tables() -> dict[str, str]:
    """Each model file's table, ``schema.table`` (the folder is the schema)."""
    return {name: f"{path.parent.name}.{name}" for name, path in _model_files().items()}


@dataclass(frozen=True)
class _Declaration:
    """A template rendered: its SQL, its ``config`` options and the tables its ``ref`` and
    ``source`` calls named, in order."""

    sql: str
    options: dict[str, Any]
    refs: tuple[str, ...]
    sources: tuple[str, ...]


def _declaration(path: Path, is_incremental: bool = False) -> _Declaration:
    """Render a model or check template with ``attributes``, ``this``, ``is_incremental``,
    ``new_loads``, ``changed_customers`` and the ``config``, ``ref`` and ``source`` calls, which
    it records (an unknown model or source is a `ModelDeclarationError`)."""
    tables = _model_tables()
    options: dict[str, Any] = {}
    refs: list[str] = []
    sources: list[str] = []

    def config(**given: Any) -> str:
        options.update(given)
        return ""

    def ref(name: str) -> str:
        if name not in tables:
            raise ModelDeclarationError(f"{path.name}: ref({name!r}) names no model")
        refs.append(tables[name])
        return tables[name]

    def source(schema: str, table: str) -> str:
        name = f"{schema}.{table}"
        if name not in SOURCES:
            raise ModelDeclarationError(f"{path.name}: source{(schema, table)} names no source")
        sources.append(name)
        return name

    name = path.stem
    sql = _TEMPLATES.from_string(path.read_text()).render(
        attributes=ATTRIBUTES,
        this=f"{path.parent.name}.{name}",
        is_incremental=is_incremental,
        new_loads=materializations.new_loads_table(name),
        changed_customers=materializations.changed_customers_table(name),
        config=config,
        ref=ref,
        source=source,
    )
    return _Declaration(sql, options, tuple(dict.fromkeys(refs)), tuple(dict.fromkeys(sources)))


def declare_model(path: Path) -> Model:
    """Read a model file's declaration: render it once, recording ``config``, ``ref`` (to the
    models in `MODELS_DIR`) and ``source``; `ModelDeclarationError` says what is wrong."""
    declared = _declaration(path)
    options = declared.options
    model = Model(
        name=path.stem,
        schema=path.parent.name,
        path=path,
        materialized=str(options.get("materialized", "")),
        description=options.get("description", ""),
        refs=declared.refs,
        sources=declared.sources,
        unique_key=options.get("unique_key"),
        not_null=tuple(options.get("not_null", ())),
    )
    problem = _declaration_problem(model, unknown=set(options) - set(CONFIG_OPTIONS))
    if problem:
        raise ModelDeclarationError(f"{path.name}: {problem}")
    return model


def declare_check(path: Path) -> Check:
    """Read a check file's declaration: ``config(model=..., description=...)``, the model whose
    asset it checks, and the tables it reads (``ref``, ``source``)."""
    declared = _declaration(path)
    options = declared.options
    unknown = set(options) - {"model", "description"}
    if unknown:
        raise ModelDeclarationError(f"{path.name}: unknown config {sorted(unknown)}")
    model = options.get("model")
    if model not in _model_files():
        raise ModelDeclarationError(f"{path.name}: config(model=...) must name a model")
    if not options.get("description"):
        raise ModelDeclarationError(f"{path.name}: a description is required")
    return Check(path.stem, path, model, options["description"], declared.sources + declared.refs)


def _declaration_problem(model: Model, unknown: set[str]) -> str | None:
    if unknown:
        return f"unknown config {sorted(unknown)}; the options are {', '.join(CONFIG_OPTIONS)}"
    if model.materialized not in MATERIALIZATIONS:
        return f"materialized must be one of {', '.join(MATERIALIZATIONS)}"
    if not model.description:
        return "a description is required"
    if model.materialized != "incremental":
        return None
    if model.reads_source:
        if len(model.sources) > 1 or model.refs:
            return "an incremental model reads either one source or one model"
        return None if model.unique_key else "an incremental model needs a unique_key"
    if len(model.refs) != 1:
        return "an incremental model reads either one source or one model"
    if model.unique_key != "customer_id":
        return (
            "an incremental model over a model is incremental by customer: unique_key customer_id"
        )
    return None


def _declare_all() -> tuple[Model, ...]:
    """Every model, each after the models it refers to (ties in file order)."""
    declared = {name: declare_model(path) for name, path in _model_files().items()}
    by_table = {model.table: model for model in declared.values()}
    graph = graphlib.TopologicalSorter(
        {model: {by_table[table] for table in model.refs} for model in declared.values()}
    )
    graph.prepare()
    ordered: list[Model] = []
    while graph.is_active():
        ready = sorted(graph.get_ready(), key=lambda model: model.path)
        ordered += ready
        graph.done(*ready)
    return tuple(ordered)


MODEL_SPECS: tuple[Model, ...] = _declare_all()
"""The models in dependency order (the Dagster assets are built from them)."""
MODELS: tuple[str, ...] = tuple(model.name for model in MODEL_SPECS)
_BY_NAME = {model.name: model for model in MODEL_SPECS}

CHECK_SPECS: tuple[Check, ...] = tuple(
    declare_check(path) for path in sorted(CHECKS_DIR.glob("*.sql"))
)
"""The checks (`warehouse/checks/*.sql`), by name (the Dagster asset checks are built from them)."""
CHECKS: tuple[str, ...] = tuple(check.name for check in CHECK_SPECS)

WATERMARKED_MODELS: tuple[str, ...] = tuple(
    model.name for model in MODEL_SPECS if model.keeps_watermark
)
"""The models that record in meta.model_watermarks the last staging batch they reflect."""

MODELS_VERSION = 4
"""The version of the models' tables. Bump it when a model changes in a way that its existing
tables cannot follow incrementally (a table becomes a view, a column changes): the first run on
a warehouse built by another version rebuilds staging, analytics and meta from raw, which
derives them completely. Version 2: analytics.dim_customer_current is a view. Version 3:
staging lists absent_attributes instead of a present_attributes struct. Version 4: the models
are declarative selects; the daily report's per-customer shares are the model
intermediate.int_customer_daily_contributions and the change feed is meta.customer_changes."""

DERIVED_SCHEMAS = ("staging", "intermediate", "analytics", "meta")
"""The schemas the models derive from raw: the ones `maintenance/drop_derived_state.sql` drops."""

_Compiled = tuple[
    tuple[materializations.Step | materializations.CreateTable, tuple[duckdb.Statement, ...]], ...
]
_COMPILED: dict[tuple[str, bool], _Compiled] = {}


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


def model(name: str) -> Model:
    """Model `name`, as its file declares it."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown model {name!r}; the models are: {', '.join(MODELS)}")
    return _BY_NAME[name]


def model_path(name: str) -> Path:
    """The SQL file of model `name`."""
    return model(name).path


def model_table(name: str) -> str:
    """The table model `name` maintains, as `schema.table`."""
    return model(name).table


def check_path(name: str) -> Path:
    """The SQL file of check `name`."""
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; the checks are: {', '.join(CHECKS)}")
    return CHECKS_DIR / f"{name}.sql"


def run_model(con: duckdb.DuckDBPyConnection, name: str) -> ModelResult:
    """Bring one model's table up to date in its own transaction (rolled back on error)."""
    model(name)  # an unknown name fails before anything runs
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
    return len({watermarks.get(model_table(name), 0) for name in WATERMARKED_MODELS}) == 1


def run_check(con: duckdb.DuckDBPyConnection, name: str, sample_size: int = 5) -> CheckResult:
    """Run one asset check and return how many rows offend, with a few of them."""
    # One execution: a relation would run the query again for the count and for the sample.
    offending = con.sql(render(check_path(name))).to_arrow_table()
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
    """Run one model; return its rows written and the models version whose derived tables it
    dropped first (the first model only, when another version built them)."""
    if name != MODELS[0]:
        return _materialize(con, model(name)), None
    _require_raw_events(con)
    recorded = recorded_models_version(con)
    rebuilt_from = None
    if recorded not in (None, MODELS_VERSION):
        _execute_script(con, FULL_REFRESH_SQL)
        rebuilt_from = recorded
    rows_written = _materialize(con, model(name))
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


def _materialize(con: duckdb.DuckDBPyConnection, model: Model) -> int:
    """Execute the statements of ``model``'s materialization; return the rows it wrote."""
    rows_written = 0
    for step, statements in _compiled(con, model, _exists(con, model.table)):
        if isinstance(step, materializations.CreateTable):
            con.execute(step.ddl(con))
        for statement in statements:
            result = con.execute(statement).fetchall()
            if step.writes_rows:
                rows_written = result[0][0]
    return rows_written


def _execute_script(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    for statement in con.extract_statements(path.read_text()):
        con.execute(statement)


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".")
    ((found,),) = con.execute(
        "select count(*) from information_schema.tables "
        "where table_catalog = current_database() and table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(found)


def render(path: Path, is_incremental: bool = True) -> str:
    """A model's select (or a check's query) as DuckDB runs it: its Jinja rendered with
    ``attributes`` (the customer attributes of ``warehouse.attributes``, in column order),
    ``ref``, ``source``, ``this`` and ``is_incremental`` (whether its table exists already)."""
    return _declaration(path, is_incremental).sql


def compile_model(
    name: str, is_incremental: bool = True
) -> list[materializations.Step | materializations.CreateTable]:
    """The steps a run of model ``name`` executes (``is_incremental``: its table exists)."""
    found = model(name)
    return materializations.steps(found, render(found.path, is_incremental), is_incremental)


def _compiled(con: duckdb.DuckDBPyConnection, model: Model, exists: bool) -> _Compiled:
    """A model's steps with their statements, rendered and parsed once per process and table
    state (a `CreateTable` step has none: its DDL is written when it runs)."""
    key = (model.name, exists)
    if key not in _COMPILED:
        _COMPILED[key] = tuple(
            (
                step,
                ()
                if isinstance(step, materializations.CreateTable)
                else tuple(con.extract_statements(step.sql)),
            )
            for step in compile_model(model.name, exists)
        )
    return _COMPILED[key]


def _require_raw_events(con: duckdb.DuckDBPyConnection) -> None:
    try:
        relation(con, RAW_TABLE)
    except duckdb.CatalogException as error:
        raise MissingRawEventsError(
            f"{RAW_TABLE} does not exist in this database: load the landed events first "
            "(`flavours load`), then run the models."
        ) from error
