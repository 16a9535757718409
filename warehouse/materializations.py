"""How a model's select becomes its table: the statements of each materialization.

A model declares its materialization in its file (``config(materialized=...)``):

- ``view``: the select as a view, replaced on every run.
- ``table``: the select's rows replace the table's on every run; a table over models records the
  oldest batch they reflect as its watermark.
- ``incremental``: a run writes only what changed since the model's last run. A model reading
  the raw source is incremental by load: its select reads the loads it has not consumed
  (``new_loads``); its rows replace the rows of the same ``unique_key``, and the customers whose
  rows it wrote or replaced go to the change feed, meta.customer_changes, as one batch. A model
  reading another model is incremental by customer: its select reads the customers that changed
  in the batches its upstream has consumed since its own watermark (``changed_customers``), and
  its rows replace all of theirs (``unique_key`` is customer_id).

The first run of a table or incremental model creates the table from the select (its columns and
types are the select's) and sets NOT NULL on the columns the model lists in ``not_null``. The
models record the last batch they reflect in meta.model_watermarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import duckdb

if TYPE_CHECKING:
    from warehouse.runner import Model

CHANGE_FEED = "meta.customer_changes"
"""The customers whose staged events changed, by batch: written by the model reading the raw
source, consumed by every incremental model downstream."""
WATERMARKS = "meta.model_watermarks"
"""The last batch each model's table reflects (every model but the views)."""

_BOOKKEEPING = (
    "create schema if not exists meta",
    f"create table if not exists {WATERMARKS} "
    "(model varchar not null, batch_id bigint not null, updated_at timestamptz not null)",
    f"create table if not exists {CHANGE_FEED} "
    "(batch_id bigint not null, customer_id varchar not null)",
)


@dataclass(frozen=True)
class Step:
    """One statement of a materialization; ``writes_rows`` marks the one that writes the model's
    rows (its row count is the run's rows written)."""

    sql: str
    writes_rows: bool = False


@dataclass(frozen=True)
class CreateTable:
    """Create ``table`` with the columns and types of ``select``, NOT NULL on ``not_null``.

    The DDL is written when the step runs (the select's temp tables exist by then): DuckLake
    cannot add NOT NULL to a table created in the same transaction, and a create-table-as would
    leave every column nullable.
    """

    table: str
    select: str
    not_null: tuple[str, ...]
    writes_rows: ClassVar[bool] = False

    def ddl(self, con: duckdb.DuckDBPyConnection) -> str:
        columns = con.execute(f"describe\n{self.select}").fetchall()
        unknown = set(self.not_null) - {name for name, *_ in columns}
        if unknown:
            raise ValueError(f"{self.table}: not_null names columns it lacks: {sorted(unknown)}")
        definitions = ", ".join(
            f'"{name}" {type_}' + (" not null" if name in self.not_null else "")
            for name, type_, *_ in columns
        )
        return f"create table {self.table} ({definitions})"


def new_loads_table(model: str) -> str:
    """The temp table of the raw loads by-load model ``model`` has not consumed yet."""
    return f"{model}__new_loads"


def changed_customers_table(model: str) -> str:
    """The temp table of the customers by-customer model ``model`` recomputes."""
    return f"{model}__changed_customers"


def steps(model: Model, select: str, exists: bool) -> list[Step | CreateTable]:
    """The statements that bring ``model``'s table up to date from its rendered ``select``;
    ``exists``: whether its table exists already."""
    schema = [Step(f"create schema if not exists {model.schema}")]
    if model.materialized == "view":
        return [*schema, Step(f"create or replace view {model.table} as\n{select}")]
    if model.materialized == "table":
        write = (
            [Step(f"delete from {model.table}"), Step(f"insert into {model.table}\n{select}", True)]
            if exists
            else _create(model, select)
        )
        watermark = _move_watermark(model, to=_oldest(model.refs)) if model.refs else []
        return schema + write + watermark
    if model.reads_source:
        return schema + [Step(sql) for sql in _BOOKKEEPING] + _by_load(model, select, exists)
    return schema + _by_customer(model, select, exists)


def _create(model: Model, select: str) -> list[Step | CreateTable]:
    return [
        CreateTable(model.table, select, model.not_null),
        Step(f"insert into {model.table}\n{select}", True),
    ]


def _watermark(table: str) -> str:
    return f"(select coalesce(max(batch_id), 0) from {WATERMARKS} where model = '{table}')"


def _oldest(tables: tuple[str, ...]) -> str:
    """The oldest batch the tables reflect."""
    return f"least({', '.join(_watermark(table) for table in tables)})"


def _move_watermark(model: Model, to: str) -> list[Step | CreateTable]:
    return [
        Step(f"delete from {WATERMARKS} where model = '{model.table}'"),
        Step(f"insert into {WATERMARKS} select '{model.table}', {to}, now()"),
    ]


def _by_load(model: Model, select: str, exists: bool) -> list[Step | CreateTable]:
    """Incremental by raw load: the new loads form one batch; the rows the select returns replace
    the rows of the same unique key; their customers, and those of the rows they replace, are the
    batch's changes."""
    (source,) = model.sources
    loads = f"meta.{model.name}_loads"
    new_loads = new_loads_table(model.name)
    batch = f"{model.name}__batch"
    key = model.unique_key
    steps: list[Step | CreateTable] = [
        Step(
            f"create table if not exists {loads} (_dlt_load_id varchar not null, "
            "batch_id bigint not null, staged_at timestamptz not null)"
        ),
        Step(
            f"create or replace temp table {batch} as "
            f"select coalesce(max(batch_id), 0) + 1 as batch_id from {loads}"
        ),
        Step(
            f"create or replace temp table {new_loads} as "
            f"select distinct _dlt_load_id from {source} "
            f"anti join {loads} using (_dlt_load_id) where _dlt_load_id is not null"
        ),
    ]
    if exists:
        # the keys first (the select without its wide columns), so that the customers of the
        # rows being replaced can be recorded before they are deleted
        keys = f"{model.name}__keys"
        steps += [
            Step(
                f"create or replace temp table {keys} as "
                f"select {key}, customer_id from (\n{select}\n)"
            ),
            Step(
                f"insert into {CHANGE_FEED} select {batch}.batch_id, changed.customer_id "
                f"from (select customer_id from {keys} union "
                f"select customer_id from {model.table} semi join {keys} using ({key})) "
                f"as changed cross join {batch}"
            ),
            Step(f"delete from {model.table} where {key} in (select {key} from {keys})"),
            Step(f"insert into {model.table}\n{select}", True),
            Step(f"drop table {keys}"),
        ]
    else:
        steps += [
            *_create(model, select),
            Step(
                f"insert into {CHANGE_FEED} select distinct {batch}.batch_id, customer_id "
                f"from {model.table} cross join {batch}"
            ),
        ]
    return [
        *steps,
        Step(
            f"insert into {loads} select {new_loads}._dlt_load_id, {batch}.batch_id, now() "
            f"from {new_loads} cross join {batch}"
        ),
        # the batch, when it had loads; otherwise the watermark stays where it was
        *_move_watermark(model, to=f"(select coalesce(max(batch_id), 0) from {loads})"),
        Step(f"drop table {new_loads}"),
        Step(f"drop table {batch}"),
    ]


def _by_customer(model: Model, select: str, exists: bool) -> list[Step | CreateTable]:
    """Incremental by customer: the customers changed in the batches the upstream model has
    consumed since this model's watermark are recomputed (their rows deleted, the select's
    inserted), and the watermark moves up to the upstream's."""
    (upstream,) = model.refs
    changed = changed_customers_table(model.name)
    steps: list[Step | CreateTable] = [
        Step(
            f"create or replace temp table {changed} as "
            f"select distinct customer_id from {CHANGE_FEED} "
            f"where batch_id > {_watermark(model.table)} and batch_id <= {_watermark(upstream)}"
        ),
        *_move_watermark(model, to=_watermark(upstream)),
    ]
    if exists:
        steps += [
            Step(
                f"delete from {model.table} "
                f"where {model.unique_key} in (select customer_id from {changed})"
            ),
            Step(f"insert into {model.table}\n{select}", True),
        ]
    else:
        steps += _create(model, select)
    return [*steps, Step(f"drop table {changed}")]
