"""Exactly-once loading of landed objects into ``raw`` with the dlt pipeline ``flavours``.

The manifest ``raw.landed_objects`` lists every object whose rows are committed. A load:

1. lists the landing store and subtracts the manifest (no high-water mark: an object that
   lands late, or with an older name from a skewed clock, is still pending);
2. deletes rows of pending objects left by an interrupted earlier load (their rows may be
   committed while their manifest entries are not);
3. loads the pending objects' rows with dlt (``landing_source.flavours_landing``); with none
   pending, dlt is not run at all once the raw tables exist;
4. only then records them in the manifest, with the id of the dlt load that committed them.

A crash anywhere repeats the pending objects from step 1: nothing skipped, nothing doubled.
A lock file beside the warehouse keeps two loads (sensor run and schedule run) from
interleaving. Reads the settings ``FLAVOURS_LANDING_URL``, ``FLAVOURS_WAREHOUSE`` and
``FLAVOURS_DLT_DIR``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import dlt
import duckdb
import pyarrow as pa
from dlt.common.configuration.specs import AwsCredentials, ConnectionStringCredentials
from dlt.common.storages.configuration import FilesystemConfiguration

from core.landing import REJECTED_PREFIX, LandedObject, LandingStore
from core.settings import Settings
from pipelines.lake_destination import LakeCredentials, warehouse_lake
from pipelines.landing_source import LoadTally
from warehouse.lake import (
    LAKE,
    METADATA_SCHEMA,
    Lake,
    S3Credentials,
    open_lake,
    writer_lock,
)

log = logging.getLogger(__name__)

PIPELINE_NAME = "flavours"
DATASET = "raw"
MODELLED_TOPICS = ("customers", "customers_snapshot", "errors")
LOADED_PREFIXES = (*MODELLED_TOPICS, *(f"{REJECTED_PREFIX}/{topic}" for topic in MODELLED_TOPICS))
RAW_TABLES = ("customer_events", "customer_events_rejected", "delivery_errors")
MANIFEST_TABLE = "landed_objects"
MANIFEST = f"{DATASET}.{MANIFEST_TABLE}"


def make_pipeline(settings: Settings) -> dlt.Pipeline:
    """The dlt pipeline ``flavours`` into the warehouse's DuckLake (``warehouse.lake``), dataset
    raw."""
    lake = Lake.of(settings)
    # the lake's options (its files' compression) are set before dlt writes the first file
    open_lake(lake).close()
    # dlt's own columns: every raw row carries the id of the load that committed it.
    dlt.config["normalize.parquet_normalizer.add_dlt_load_id"] = True
    # dlt's parquet files live only until DuckDB has read them, so a loaded package is deleted
    # at once instead of kept until the next run. They keep dlt's default snappy compression:
    # Several times fewer bytes to write and read, and since parsing runs ahead in two workers
    # it costs no time.
    dlt.config["load.delete_completed_jobs"] = True
    # Each parsed chunk goes through its three transformers into dlt's writer before the next
    # chunk is taken. With dlt's default round robin the writer falls chunks behind the parse
    # workers and finishes alone on one core.
    dlt.config["extract.next_item_mode"] = "fifo"
    if lake.on_postgres:
        catalog = ConnectionStringCredentials(lake.catalog)
    else:
        catalog = ConnectionStringCredentials({"drivername": "sqlite", "database": lake.catalog})
    storage = FilesystemConfiguration(
        bucket_url=lake.data_url, credentials=_aws_credentials() if lake.on_s3 else None
    )
    credentials = LakeCredentials(
        ducklake_name=LAKE, metadata_schema=METADATA_SCHEMA, catalog=catalog, storage=storage
    )
    # Appends need no order among their rows; letting DuckDB insert in parallel about halves
    # the load of a large package.
    credentials.global_config = {"preserve_insertion_order": False}
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=warehouse_lake(credentials),
        dataset_name=DATASET,
        pipelines_dir=settings.dlt_dir,
        progress=None,
    )


def _aws_credentials() -> AwsCredentials:
    """The warehouse's S3 credentials for dlt, from the same ``AWS_*`` variables as ours."""
    s3 = S3Credentials.from_environment()
    credentials = AwsCredentials()
    credentials.aws_access_key_id = s3.key_id
    credentials.aws_secret_access_key = s3.secret
    credentials.aws_session_token = s3.session_token or None
    credentials.region_name = s3.region
    credentials.endpoint_url = s3.endpoint
    return credentials


@contextlib.contextmanager
def warehouse_lock(settings: Settings) -> Iterator[None]:
    """Serialise writers of one warehouse (loads and model runs), across processes."""
    with writer_lock(Lake.of(settings)):
        yield


def list_landed(store: LandingStore) -> list[LandedObject]:
    """Every landed object of the modelled topics and the receiver's rejects of them."""
    return [obj for prefix in LOADED_PREFIXES for obj in store.list_objects(prefix)]


def loaded_keys(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Keys of the objects in the manifest (empty before the first load)."""
    try:
        rows = con.execute(f"select distinct landing_file from {MANIFEST}").fetchall()  # noqa: S608
    except duckdb.CatalogException:
        return set()
    return {row[0] for row in rows}


def raw_tables_exist(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every raw table exists (a first load creates them, even from no objects)."""
    ((found,),) = con.execute(
        "select count(*) from duckdb_tables() "
        "where database_name = current_database() and schema_name = ? and table_name in ?",
        [DATASET, list(RAW_TABLES)],
    ).fetchall()
    return found == len(RAW_TABLES)


def pending_objects(con: duckdb.DuckDBPyConnection, store: LandingStore) -> list[LandedObject]:
    """Landed objects not yet in the manifest, oldest key first."""
    done = loaded_keys(con)
    return [obj for obj in list_landed(store) if obj.key not in done]


def discard_partial_loads(con: duckdb.DuckDBPyConnection, objects: Sequence[LandedObject]) -> int:
    """Delete raw rows of ``objects`` committed by an interrupted load; returns rows deleted."""
    if not objects:
        return 0
    keys = pa.table({"landing_file": [obj.key for obj in objects]})
    deleted = 0
    con.register("pending_objects", keys)
    try:
        for name in RAW_TABLES:
            try:
                ((rows,),) = con.execute(
                    f"delete from {DATASET}.{name} "  # noqa: S608
                    "where landing_file in (select landing_file from pending_objects)"
                ).fetchall()
            except duckdb.CatalogException:
                continue
            deleted += int(rows)
    finally:
        con.unregister("pending_objects")
    if deleted:
        log.warning(
            f"discarded {deleted:,} rows that an interrupted load had committed; the "
            f"{len(objects):,} pending objects load from the start",
            extra={"rows": deleted, "objects": len(objects)},
        )
    return deleted


def record_manifest(
    con: duckdb.DuckDBPyConnection,
    objects: Sequence[LandedObject],
    tally: LoadTally,
    load_id: str,
) -> None:
    """Add ``objects`` to the manifest; call only after their rows are committed by ``load_id``.

    One SQL insert, not a second dlt run: the manifest is this loader's own bookkeeping, and a
    dlt run for a few rows would cost every load a noticeable fixed time. Manifests that an
    earlier version wrote through dlt have the same columns.
    """
    if not objects:
        return
    loaded_at = datetime.now(UTC)
    rows = pa.table(
        {
            "landing_file": [obj.key for obj in objects],
            "topic": [obj.topic for obj in objects],
            "bytes": pa.array([obj.size for obj in objects], pa.int64()),
            "lines": pa.array([tally.lines.get(obj.key, 0) for obj in objects], pa.int64()),
            "loaded_at": pa.array([loaded_at] * len(objects), pa.timestamp("us", tz="UTC")),
            "_dlt_load_id": pa.array([load_id] * len(objects), pa.string()),
        }
    )
    con.execute(
        f"create table if not exists {MANIFEST} ("
        "landing_file varchar not null, topic varchar not null, bytes bigint not null, "
        "lines bigint not null, loaded_at timestamptz not null, _dlt_load_id varchar not null)"
    )
    con.register("new_manifest_rows", rows)
    try:
        con.execute(f"insert into {MANIFEST} by name select * from new_manifest_rows")  # noqa: S608
    finally:
        con.unregister("new_manifest_rows")
