"""Dagster assets: landed objects → raw tables (dlt) → staging → analytics (SQL models).

Keys follow schema and table: ``raw/customer_events``, ``staging/stg_customer_events``,
``analytics/dim_customer``, …; groups are ``landing``, ``raw`` and each model's schema
(``staging``, ``intermediate``, ``analytics``).
``landing/customers_snapshot`` is the backfill from the Customers API, run on demand.
Every materialization reports its table's row count, column schema and a preview.
"""

import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData
from pydantic import Field

from core.landing import LandingStore
from core.settings import Settings
from pipelines.backfill import SNAPSHOT_TOPIC, BackfillError, backfill
from pipelines.landing_source import LoadTally, flavours_landing
from pipelines.loading import (
    DATASET,
    PIPELINE_NAME,
    discard_partial_loads,
    make_pipeline,
    pending_objects,
    raw_tables_exist,
    record_manifest,
    warehouse_lock,
)
from pipelines.resources import FlavoursSettings
from pipelines.run_logs import project_logs_in_run
from warehouse import lake, runner

PREVIEW_ROWS = 10
VARCHAR = duckdb.sqltype("VARCHAR")

landing_assets = [
    AssetSpec(
        key=AssetKey(["landing", topic]),
        group_name="landing",
        description=f"Immutable JSON-lines objects under {topic}/ in FLAVOURS_LANDING_URL, "
        "written by the webhook receiver.",
        kinds={"json"},
    )
    for topic in ("customers", "errors")
]


class BackfillConfig(Config):
    """Run configuration of the backfill (``flavours backfill`` takes the same options)."""

    since: str | None = Field(
        None, description="Only customers updated at or after this UTC date (YYYY-MM-DD)."
    )
    per_page: int = Field(100, ge=1, le=1000, description="Customers asked for per page.")
    restart: bool = Field(False, description="Start from page 1 even if a backfill was cut off.")


@asset(
    key=AssetKey(["landing", SNAPSHOT_TOPIC]),
    group_name="landing",
    kinds={"api", "json"},
    description="Every customer of the Flavours Customers List API (FLAVOURS_API_URL), landed as "
    f"snapshot events under {SNAPSHOT_TOPIC}/ (pipelines.backfill). Run on demand; the next "
    "load adds them to the dimension.",
)
def customers_snapshot(
    context: AssetExecutionContext, config: BackfillConfig, flavours: FlavoursSettings
) -> MaterializeResult:
    """Page through the Customers API and land each page; a cut-off run resumes."""
    settings = flavours.get()
    if not settings.api_url:
        # not configured: `--select '*'` still materializes the rest; the UI shows why
        context.log.warning("FLAVOURS_API_URL is not set: no backfill, nothing landed")
        return MaterializeResult(metadata={"skipped": "FLAVOURS_API_URL is not set", "pages": 0})
    since = datetime.fromisoformat(config.since).replace(tzinfo=UTC) if config.since else None
    with project_logs_in_run(context, settings.log_level):
        try:
            result = backfill(
                settings,
                since=since,
                per_page=config.per_page,
                restart=config.restart,
                on_page=lambda page, customers: context.log.info(
                    f"page {page} landed ({customers:,} customers so far)"
                ),
            )
        except BackfillError as error:
            raise Failure(str(error)) from None
    return MaterializeResult(
        metadata={
            "backfill_run": result.run_id,
            "pages": result.pages,
            "customers_landed": result.customers,
            "skipped_before_since": result.skipped_before_since,
            "resumed_from_page": result.resumed_from_page or 1,
            "unmapped_fields": MetadataValue.json(dict(result.unexpected_fields)),
            "unusable_items": result.unusable_items,
        }
    )


class RawTranslator(DagsterDltTranslator):
    """dlt resources become ``raw/<table>`` assets fed by the landing store."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        spec = super().get_asset_spec(data)
        name = data.resource.name
        upstream = ["errors"] if name == "delivery_errors" else ["customers", SNAPSHOT_TOPIC]
        return spec.replace_attributes(
            key=AssetKey([DATASET, name]),
            deps=[AssetKey(["landing", topic]) for topic in upstream],
            group_name=DATASET,
            description=(data.resource.__doc__ or spec.description or "").strip(),
            kinds={"dlt", "duckdb"},
        )


# dagster-dlt reads the source's resources and a pipeline when the definitions load; runs
# build their own pipeline from settings. This one only names the destination.
_definition_pipeline = dlt.pipeline(
    pipeline_name=PIPELINE_NAME,
    destination="duckdb",
    dataset_name=DATASET,
    pipelines_dir=str(Path(tempfile.gettempdir()) / "flavours-dlt-definitions"),
)


@dlt_assets(
    dlt_source=flavours_landing(),
    dlt_pipeline=_definition_pipeline,
    name="load_landed_objects",
    dagster_dlt_translator=RawTranslator(),
)
def raw_tables(
    context: AssetExecutionContext, dlt: DagsterDltResource, flavours: FlavoursSettings
) -> Iterator[MaterializeResult]:
    """Load every landed object not yet in the manifest, exactly once (pipelines.loading)."""
    settings = flavours.get()
    store = LandingStore(settings.landing_url, settings.landing_compression)
    with project_logs_in_run(context, settings.log_level), warehouse_lock(settings):
        started = time.perf_counter()
        with lake.connect(settings) as con:
            objects = pending_objects(con, store)
            discarded = discard_partial_loads(con, objects)
            run_dlt = bool(objects) or not raw_tables_exist(con)
        listed = time.perf_counter()
        context.log.info(f"{len(objects)} landed objects to load from {settings.landing_url}")
        tally = LoadTally()
        if run_dlt:
            pipeline = make_pipeline(settings)
            source = flavours_landing(
                settings.landing_url, objects, tally, settings.landing_compression
            )
            results = list(dlt.run(context=context, dlt_source=source, dlt_pipeline=pipeline))
            loaded = time.perf_counter()
            load_id = pipeline.last_trace.last_load_info.loads_ids[-1]
        else:
            # Nothing new and the tables exist: a dlt run would only record an empty load.
            keys = sorted(context.selected_asset_keys, key=lambda key: key.to_user_string())
            results = [MaterializeResult(asset_key=key) for key in keys]
        summary = {
            "landed_objects_loaded": len(objects),
            "lines_loaded": sum(tally.lines.values()),
            "rows_discarded_from_interrupted_load": discarded,
        }
        with lake.connect(settings) as con:
            if run_dlt:
                record_manifest(con, objects, tally, load_id)
                context.log.info(
                    f"loaded {sum(tally.lines.values()):,} lines: listing and cleanup "
                    f"{listed - started:.1f} s, dlt run {loaded - listed:.1f} s, manifest "
                    f"{time.perf_counter() - loaded:.1f} s"
                )
            publish_when_complete(context, con, settings, "load_landed_objects")
            for result in results:
                table = f"{DATASET}.{result.asset_key.path[-1]}"
                yield MaterializeResult(
                    asset_key=result.asset_key,
                    metadata={**(result.metadata or {}), **summary, **table_metadata(con, table)},
                )


class ModelConfig(Config):
    """Run configuration of the staging model (and so of everything downstream)."""

    full_refresh: bool = Field(
        False, description="Drop staging, analytics and their bookkeeping, then rebuild all."
    )


def _model_asset(name: str, schema: str, deps: list[AssetKey], description: str):
    """The asset of one SQL model; the first (staging) also takes the full-refresh config."""
    spec = {
        "key": AssetKey([schema, name]),
        "deps": deps,
        "group_name": schema,
        "description": description,
        "kinds": {"sql", "duckdb"},
    }

    def run(context: AssetExecutionContext, flavours: FlavoursSettings, full_refresh: bool):
        settings = flavours.get()
        with (
            project_logs_in_run(context, settings.log_level),
            warehouse_lock(settings),
            lake.connect(settings) as con,
        ):
            if full_refresh:
                context.log.warning("full refresh: dropping staging, analytics and meta state")
                runner.drop_derived_state(con)
            result = runner.run_model(con, name)
            if result.rebuilt_from_version is not None:
                context.log.warning(
                    f"staging, analytics and meta were built by models version "
                    f"{result.rebuilt_from_version}, these are version {runner.MODELS_VERSION}: "
                    f"dropped them and rebuilt {result.table} from raw; the analytics models "
                    "rebuild in their own steps of this run"
                )
            context.log.info(
                f"{result.table}: {result.rows_written} rows written, {result.rows} rows, "
                f"{result.seconds:.2f} s"
            )
            publish_when_complete(context, con, settings, result.table)
            rebuilt = (
                {}
                if result.rebuilt_from_version is None
                else {"rebuilt_from_models_version": result.rebuilt_from_version}
            )
            return MaterializeResult(
                metadata={
                    "rows_written": result.rows_written,
                    "seconds": round(result.seconds, 3),
                    **rebuilt,
                    **table_metadata(con, result.table),
                }
            )

    if name == runner.MODELS[0]:

        @asset(**spec)
        def first_model(
            context: AssetExecutionContext, config: ModelConfig, flavours: FlavoursSettings
        ) -> MaterializeResult:
            return run(context, flavours, config.full_refresh)

        return first_model

    @asset(**spec)
    def model(context: AssetExecutionContext, flavours: FlavoursSettings) -> MaterializeResult:
        return run(context, flavours, full_refresh=False)

    return model


model_assets = [
    _model_asset(
        model.name,
        runner.model_table(model.name).split(".")[0],
        [AssetKey(table.split(".")) for table in model.reads],
        model.description,
    )
    for model in runner.MODEL_SPECS
]


def table_metadata(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, Any]:
    """Row count, column schema and a preview (the first rows, as a Dagster table) of ``table``.

    The preview's values are text, so that every DuckDB type shows as DuckDB prints it.
    """
    relation = runner.relation(con, table)
    ((rows,),) = relation.count("*").fetchall()
    columns = [
        TableColumn(name=name, type=str(dtype))
        for name, dtype in zip(relation.columns, relation.dtypes, strict=True)
    ]
    as_text = relation.select(
        *(duckdb.ColumnExpression(name).cast(VARCHAR).alias(name) for name in relation.columns)
    )
    preview = [
        TableRecord(dict(zip(relation.columns, values, strict=True)))
        for values in as_text.limit(PREVIEW_ROWS).fetchall()
    ]
    return {
        "dagster/row_count": rows,
        "dagster/table_name": table,
        "dagster/column_schema": TableSchema(columns=columns),
        "preview": MetadataValue.table(
            records=preview,
            schema=TableSchema(columns=[TableColumn(name=c.name, type="string") for c in columns]),
        ),
    }


def publish_when_complete(
    context: AssetExecutionContext, con: duckdb.DuckDBPyConnection, settings: Settings, step: str
) -> None:
    """Publish the warehouse's state to readers when staging and analytics show one state (after
    a load, and after the last model of a run), then compact and expire old snapshots.

    Readers attach the last published snapshot, so they never see a run's models half-way.
    """
    if not runner.derived_state_complete(con):
        context.log.debug(f"after {step}: analytics not caught up with staging, not published yet")
        return
    started = time.perf_counter()
    snapshot = lake.publish(con, lake.Lake.of(settings), step)
    context.log.info(
        f"published warehouse snapshot {snapshot} to readers "
        f"(with maintenance, {time.perf_counter() - started:.2f} s)"
    )
