"""The warehouse: a DuckLake, so that readers never block loads and loads never fail readers.

A DuckLake keeps its catalog in a SQL database and its data as immutable Parquet files. Every
commit is a new snapshot, and a reader attached at a snapshot keeps seeing exactly that state,
whatever is written meanwhile, from any process or machine:

- ``FLAVOURS_WAREHOUSE``: the catalog. A SQLite file (default ``./data/warehouse.sqlite``: many
  processes on one machine) or ``postgresql://user:password@host:port/dbname`` (a shared
  catalog: Dagster workers and analysts on many machines).
- ``FLAVOURS_WAREHOUSE_DATA_URL``: where the Parquet files go: a local folder (default: beside a
  SQLite catalog, ``<catalog>.files/``) or ``s3://bucket/prefix`` (endpoint and credentials
  from the standard ``AWS_*`` variables, as for the landing store).

Writers (the loader and the models) hold ``writer_lock`` and ``publish`` the snapshot a step
leaves behind (with a SQLite catalog, as an immutable copy of the catalog beside it in
``<catalog>.published/``); ``connect_reader`` attaches the last published snapshot read-only, so
a reader sees the state before a step or after it, never one in between. ``maintain`` compacts small
files and expires snapshots older than ``FLAVOURS_WAREHOUSE_RETENTION_HOURS``.

DuckDB cannot download extensions here: they come from the ``duckdb-ext-*`` packages, built
for the pinned DuckDB release.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
from filelock import FileLock, Timeout

from core.settings import Settings

log = logging.getLogger(__name__)

LAKE = "lake"
"""The name every connection attaches the warehouse as (and makes its default database)."""
METADATA_SCHEMA = "ducklake"
"""The Postgres schema that holds the DuckLake catalog's tables."""
PUBLISHED = "ops.published_snapshots"
"""Snapshots a writer left in a finished state; readers attach the newest one."""
LOCK_TIMEOUT_S = 15 * 60
EXTENSIONS = ("ducklake", "sqlite_scanner", "postgres_scanner", "httpfs")
SQLITE_BUSY_TIMEOUT_MS = 10_000
OPEN_ATTEMPTS = 5
TRANSIENT_CATALOG_ERRORS = ("database disk image is malformed", "database is locked", "busy")
"""SQLite catalog errors a retry of the attach gets past (writers take turns under
``writer_lock``; readers attach published copies, see ``_last_published``)."""


class WarehouseError(RuntimeError):
    """The warehouse is misconfigured or not there yet; the message says what to do."""


def extension_directory() -> str:
    """The folder the ``duckdb-ext-*`` packages install DuckDB's extensions into."""
    return str(files("duckdb_ext") / "extensions")


@dataclass(frozen=True)
class S3Credentials:
    """S3 endpoint and credentials from the standard ``AWS_*`` variables."""

    key_id: str
    secret: str
    session_token: str
    region: str
    endpoint: str | None

    @classmethod
    def from_environment(cls) -> S3Credentials:
        env = os.environ
        return cls(
            key_id=env.get("AWS_ACCESS_KEY_ID", ""),
            secret=env.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=env.get("AWS_SESSION_TOKEN", ""),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        )

    def secret_statement(self, scope: str) -> str:
        """DuckDB's ``create secret`` for ``scope`` (an ``s3://bucket`` prefix)."""
        options = {
            "type": "s3",
            "key_id": self.key_id,
            "secret": self.secret,
            "session_token": self.session_token,
            "region": self.region,
            "scope": scope,
        }
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            options |= {
                "endpoint": parts.netloc or parts.path,
                "url_style": "path",
                "use_ssl": "false" if parts.scheme == "http" else "true",
            }
        body = ", ".join(
            f"{key} {value}" if key == "use_ssl" else f"{key} {_quote(value)}"
            for key, value in options.items()
        )
        return f"create or replace temporary secret flavours_warehouse_s3 ({body})"


@dataclass(frozen=True)
class Lake:
    """Where the warehouse lives: its catalog and its data path."""

    catalog: str
    """A SQLite file's absolute path, or a ``postgresql://`` URL."""
    data_url: str
    """An absolute local folder or an ``s3://`` URL, ending in ``/``."""
    retention: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Lake:
        """The warehouse the settings name; a clear error for one this version cannot use."""
        catalog = settings.warehouse
        scheme = urlsplit(catalog).scheme
        if scheme in ("postgres", "postgresql"):
            if not settings.warehouse_data_url:
                raise WarehouseError(
                    "FLAVOURS_WAREHOUSE is a Postgres catalog, so FLAVOURS_WAREHOUSE_DATA_URL "
                    "must say where the data files go (e.g. s3://bucket/warehouse/, or a "
                    "folder every writer and reader can reach)"
                )
        elif scheme in ("", "file", "sqlite"):
            path = Path(catalog.split("://", 1)[-1] if scheme else catalog)
            if path.suffix == ".duckdb" or _is_duckdb_file(path):
                raise WarehouseError(
                    f"FLAVOURS_WAREHOUSE={catalog} names a DuckDB database file. The warehouse "
                    "is now a DuckLake (readers never block loads): set FLAVOURS_WAREHOUSE to a "
                    "SQLite catalog such as ./data/warehouse.sqlite, or a postgresql:// URL, and "
                    "run `flavours load`, which rebuilds every table from the landing store."
                )
            catalog = str(path.absolute())
        else:
            raise WarehouseError(
                f"FLAVOURS_WAREHOUSE={catalog}: expected a SQLite catalog file "
                "(e.g. ./data/warehouse.sqlite) or a postgresql://user:password@host/db URL"
            )
        data_url = settings.warehouse_data_url or str(Path(catalog).with_suffix(".files"))
        if urlsplit(data_url).scheme not in ("", "s3", "file"):
            raise WarehouseError(
                f"FLAVOURS_WAREHOUSE_DATA_URL={data_url}: expected a local folder or s3://..."
            )
        if not data_url.startswith("s3://"):
            data_url = str(Path(data_url.removeprefix("file://")).absolute())
        return cls(
            catalog=catalog,
            data_url=data_url.rstrip("/") + "/",
            retention=timedelta(hours=settings.warehouse_retention_hours),
        )

    @property
    def on_postgres(self) -> bool:
        return self.catalog.startswith(("postgres://", "postgresql://"))

    @property
    def on_s3(self) -> bool:
        return self.data_url.startswith("s3://")

    def describe(self) -> str:
        """The catalog and data path for messages, without a password."""
        catalog = self.catalog
        if self.on_postgres:
            parts = urlsplit(catalog)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            catalog = f"{parts.scheme}://{parts.username or ''}@{host}{port}{parts.path}"
        return f"{catalog} (data {self.data_url})"

    def attach_statement(
        self, *, read_only: bool = False, snapshot: int | None = None, copy: Path | None = None
    ) -> str:
        """``attach`` of this lake as ``LAKE``; read-only readers may pin a snapshot, and attach
        a published ``copy`` of a SQLite catalog instead of the catalog itself."""
        if self.on_postgres:
            target = f"ducklake:postgres:{self.catalog}"
            options = [f"metadata_schema {_quote(METADATA_SCHEMA)}"]
        elif copy is not None:
            target = f"ducklake:sqlite:{copy}"
            options = []
        else:
            target = f"ducklake:sqlite:{self.catalog}"
            options = [
                "meta_journal_mode 'WAL'",
                f"meta_busy_timeout {SQLITE_BUSY_TIMEOUT_MS}",
            ]
        if read_only:
            options.append("read_only")
            if snapshot is not None:
                options.append(f"snapshot_version {int(snapshot)}")
        else:
            options.append(f"data_path {_quote(self.data_url)}")
        return f"attach {_quote(target)} as {LAKE} ({', '.join(options)})"

    @property
    def reader_copies(self) -> Path:
        """The folder of a SQLite catalog's published read copies (``<catalog>.published/``)."""
        return Path(self.catalog).with_suffix(".published")

    def exists(self) -> bool:
        """Whether the catalog is there (a SQLite catalog file; a Postgres one is assumed)."""
        return self.on_postgres or Path(self.catalog).exists()

    def lock_key(self, name: str = "writer") -> int:
        """The Postgres advisory lock key of this lake's lock ``name`` (``writer``: writers)."""
        suffix = "" if name == "writer" else f":{name}"
        digest = hashlib.sha256(f"flavours-warehouse:{METADATA_SCHEMA}{suffix}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


def open_lake(
    lake: Lake, *, read_only: bool = False, snapshot: int | None = None, copy: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with ``lake`` attached as its default database, time zone UTC."""
    if not lake.on_postgres and not read_only:
        Path(lake.catalog).parent.mkdir(parents=True, exist_ok=True)
    if not lake.on_s3 and not read_only:
        Path(lake.data_url).mkdir(parents=True, exist_ok=True)
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        con = duckdb.connect(config=connection_config())
        try:
            statements = session_statements(lake, read_only=read_only, snapshot=snapshot, copy=copy)
            for statement in statements:
                con.execute(statement)
            if not read_only:
                _set_options(con)
            _extensions_checked()
            return con
        except duckdb.Error as error:
            con.close()
            if attempt == OPEN_ATTEMPTS or not _transient(error):
                raise WarehouseError(
                    f"could not open the warehouse {lake.describe()}: {error}"
                ) from error
            log.warning(f"opening the warehouse, attempt {attempt}: {error}; retrying")
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _extensions_checked() -> None:
    global _extensions_verified
    _extensions_verified = True


def session_statements(
    lake: Lake, *, read_only: bool = False, snapshot: int | None = None, copy: Path | None = None
) -> list[str]:
    """The statements that open ``lake`` in a DuckDB session whose extensions load."""
    statements = []
    if lake.on_s3:
        bucket = urlsplit(lake.data_url).netloc
        statements.append(S3Credentials.from_environment().secret_statement(f"s3://{bucket}"))
    return [
        *statements,
        lake.attach_statement(read_only=read_only, snapshot=snapshot, copy=copy),
        f"use {LAKE}",
        "set TimeZone = 'UTC'",
    ]


PARQUET_COMPRESSION = "zstd"
"""The codec of the lake's data files: of the codecs DuckDB writes, it keeps the JSON payloads
and identifiers smallest, at a write speed close to snappy's."""


def _set_options(con: duckdb.DuckDBPyConnection) -> None:
    """Set the lake's stored options where they differ (a new lake has DuckDB's defaults)."""
    options = dict(con.execute("select option_name, value from lake.options()").fetchall())
    if options.get("parquet_compression") != PARQUET_COMPRESSION:
        con.execute(f"call {LAKE}.set_option('parquet_compression', ?)", [PARQUET_COMPRESSION])


_extensions_verified = False
"""Whether a DuckDB instance of this process has loaded the packaged extensions, signatures
checked."""


def connection_config() -> dict[str, str | bool]:
    """DuckDB configuration that loads the packaged extensions and never downloads any.

    DuckDB checks an extension's signature by hashing the whole file in every new instance,
    which dominated a small load. Once an instance of this process has loaded
    them checked, later instances load the same files without checking them again.
    """
    config: dict[str, str | bool] = {
        "extension_directory": extension_directory(),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": True,
    }
    if _extensions_verified:
        config["allow_unsigned_extensions"] = True
    return config


def connect(settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A writer's connection to the warehouse (its newest snapshot); creates an empty one."""
    return open_lake(Lake.of(settings or Settings()))


def connect_reader(settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse's last published state.

    ``analytics.*``, ``intermediate.*``, ``staging.*`` and ``raw.*`` are queryable by those
    names. The connection keeps seeing that state while loads go on (open a new one to see later
    loads), and it never blocks them. Settings come from ``FLAVOURS_*`` unless given.
    """
    lake = Lake.of(settings or Settings())
    snapshot, copy = _last_published(lake)
    return open_lake(lake, read_only=True, snapshot=snapshot, copy=copy)


def reader_statements(settings: Settings | None = None) -> list[str]:
    """The SQL that opens what ``connect_reader`` opens, for another DuckDB client of the same
    release (the DuckDB CLI): the extension folder, S3 credentials when the data is on S3, the
    read-only attach at the last published snapshot."""
    lake = Lake.of(settings or Settings())
    snapshot, copy = _last_published(lake)
    return [
        f"set extension_directory = {_quote(extension_directory())}",
        *session_statements(lake, read_only=True, snapshot=snapshot, copy=copy),
    ]


def _last_published(lake: Lake) -> tuple[int, Path | None]:
    """The newest published snapshot and, for a SQLite catalog, the read copy that holds it.

    Readers of a SQLite catalog attach its published copy, never the catalog itself: DuckDB's
    SQLite extension reads without SQLite's file locks, so a reader of the live catalog could
    read it half-way through a writer's commit ("database disk image is malformed", or worse,
    uncommitted rows). A Postgres catalog is read directly, isolated by Postgres.
    """
    if not lake.exists():
        raise WarehouseError(
            f"there is no warehouse at {lake.describe()} yet: run `flavours load` first"
        )
    if not lake.on_postgres:
        copies = sorted(lake.reader_copies.glob("snapshot-*.sqlite"))
        if copies:
            return int(copies[-1].stem.removeprefix("snapshot-")), copies[-1]
    else:
        latest = open_lake(lake, read_only=True)
        try:
            snapshot = published_snapshot(latest)
        finally:
            latest.close()
        if snapshot is not None:
            return snapshot, None
    raise WarehouseError(
        f"the warehouse {lake.describe()} has no finished load yet: run `flavours load` first"
    )


def published_snapshot(con: duckdb.DuckDBPyConnection) -> int | None:
    """The newest published snapshot of the lake ``con`` has attached (None: none yet)."""
    try:
        ((snapshot,),) = con.execute(f"select max(snapshot_id) from {PUBLISHED}").fetchall()  # noqa: S608
    except duckdb.CatalogException:
        return None
    return snapshot


def publish(con: duckdb.DuckDBPyConnection, lake: Lake, step: str) -> int:
    """Make the lake's current snapshot the one readers attach, then maintain the lake; returns
    the snapshot's id. A SQLite catalog is then copied for readers (``_last_published``).

    Call it after a step's last commit, holding ``writer_lock``.
    """
    ((snapshot,),) = con.execute(f"select id from {LAKE}.current_snapshot()").fetchall()  # noqa: S608
    con.execute("create schema if not exists ops")
    con.execute(
        f"create table if not exists {PUBLISHED} ("
        "snapshot_id bigint not null, published_at timestamptz not null, step varchar not null)"
    )
    con.execute(f"insert into {PUBLISHED} values (?, now(), ?)", [snapshot, step])  # noqa: S608
    maintain(con, lake)
    if not lake.on_postgres:
        _write_reader_copy(lake, snapshot)
    return snapshot


def _write_reader_copy(lake: Lake, snapshot: int) -> Path:
    """Copy the SQLite catalog (metadata only: kilobytes to a few MB) for readers, whole or not at
    all, and remove the copies older than the retention (never the newest)."""
    folder = lake.reader_copies
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"snapshot-{snapshot:012d}.sqlite"
    partial = folder / f".{final.name}.{os.getpid()}.partial"
    source = sqlite3.connect(f"file:{lake.catalog}?mode=ro", uri=True, timeout=10)
    target = sqlite3.connect(partial)
    try:
        source.backup(target)
        target.execute("pragma journal_mode = delete")  # read-only readers need no -wal/-shm
    finally:
        target.close()
        source.close()
    with partial.open("rb+") as file:
        os.fsync(file.fileno())
    os.replace(partial, final)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    # A copy is removed once its successor is older than the retention: a reader may have
    # opened it until the successor appeared, and DuckDB reopens the file for every query.
    expired = time.time() - lake.retention.total_seconds()
    copies = sorted(folder.glob("snapshot-*.sqlite"))
    for old, successor in itertools.pairwise(copies):
        if successor.stat().st_mtime < expired:
            old.unlink(missing_ok=True)
    for stale in folder.glob(".snapshot-*.partial"):  # left by a writer that was killed
        if stale.stat().st_mtime < expired:
            stale.unlink(missing_ok=True)
    return final


def maintain(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Compact small files, expire snapshots older than the retention (never the published
    one) and delete the files no kept snapshot needs. Hold ``writer_lock``."""
    keep_from = datetime.now(UTC) - lake.retention
    ((published_at,),) = con.execute(
        "select min(snapshot_time) from ducklake_snapshots(?) where snapshot_id >= "
        "coalesce((select max(snapshot_id) from ops.published_snapshots), 0)",
        [LAKE],
    ).fetchall()
    if published_at is not None:
        keep_from = min(keep_from, published_at)
    con.execute("call ducklake_merge_adjacent_files(?)", [LAKE])
    # Expired by id: on a SQLite catalog, DuckLake's older_than also expires the snapshots later
    # on keep_from's calendar day (the published one included), so the comparison is DuckDB's.
    expired = [
        snapshot_id
        for (snapshot_id,) in con.execute(
            "select snapshot_id from ducklake_snapshots(?) where snapshot_time < ? "
            "and snapshot_id < (select max(snapshot_id) from ducklake_snapshots(?))",
            [LAKE, keep_from, LAKE],
        ).fetchall()
    ]
    if expired:
        con.execute("call ducklake_expire_snapshots(?, versions => ?)", [LAKE, expired])
    con.execute("call ducklake_cleanup_old_files(?, older_than => ?)", [LAKE, keep_from])


def writer_lock(lake: Lake) -> contextlib.AbstractContextManager[None]:
    """Serialise the lake's writers (loads and model runs): a lock file beside a SQLite
    catalog, a Postgres advisory lock on a shared catalog (across machines)."""
    return lake_lock(lake, "writer")


@contextlib.contextmanager
def lake_lock(lake: Lake, name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the lake's lock called ``name``, waiting at most ``timeout_s`` (0: fail at once if
    another process holds it); a ``WarehouseError`` says who waited for what."""
    busy = WarehouseError(
        f"another process has held the {name} lock of the warehouse {lake.describe()} for more "
        f"than {timeout_s:g} s"
    )
    if not lake.on_postgres:
        lock_path = f"{lake.catalog}.lock" if name == "writer" else f"{lake.catalog}.{name}.lock"
        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        try:
            lock = FileLock(lock_path, timeout=timeout_s, blocking=timeout_s > 0)
            lock.acquire()
        except Timeout:
            raise busy from None
        try:
            yield
        finally:
            lock.release()
        return
    import psycopg

    key = lake.lock_key(name)
    with psycopg.connect(lake.catalog, autocommit=True) as pg:
        deadline = time.monotonic() + timeout_s
        while not pg.execute("select pg_try_advisory_lock(%s)", [key]).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise busy
            time.sleep(0.5)
        try:
            yield
        finally:
            pg.execute("select pg_advisory_unlock(%s)", [key])


def _transient(error: duckdb.Error) -> bool:
    return any(text in str(error) for text in TRANSIENT_CATALOG_ERRORS)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _is_duckdb_file(path: Path) -> bool:
    """Whether ``path`` holds a DuckDB database (its header's magic bytes)."""
    try:
        with path.open("rb") as handle:
            return handle.read(12)[8:12] == b"DUCK"
    except OSError:
        return False
