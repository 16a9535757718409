"""dlt's DuckLake destination, each of its DuckDB connections opened with ``connection_config()``.

dlt opens a new DuckDB instance for every connection to a DuckLake (seven in a load) without
start-up configuration, so each one hashed the packaged extensions to check their signatures
again; this process checked them once already (``warehouse.lake``). Otherwise it is dlt's
``ducklake`` destination, under dlt's own type name, so existing pipeline state stays valid.
"""

from __future__ import annotations

from typing import Any

import duckdb
from dlt.common.configuration import configspec
from dlt.destinations import ducklake
from dlt.destinations.impl.duckdb.configuration import DuckDbConnectionPool
from dlt.destinations.impl.ducklake.configuration import (
    DuckLakeClientConfiguration,
    DuckLakeCredentials,
)

from warehouse.lake import connection_config


class LakeConnections(DuckDbConnectionPool):
    """A new connection per borrow, as dlt's DuckLake pool, started with ``connection_config()``
    and then given dlt's settings and statements (the attach) as dlt's pool gives them.
    ``credentials.extensions`` is not read: ``connection_config()`` autoloads the packaged ones."""

    def borrow_conn(
        self,
        global_config: dict[str, Any] | None = None,
        local_config: dict[str, Any] | None = None,
        pragmas: list[str] | None = None,
    ) -> duckdb.DuckDBPyConnection:
        with self._conn_lock:
            con = duckdb.connect(config=connection_config())
            try:
                settings = {**(self.credentials.global_config or {}), **(global_config or {})}
                self._apply_config(con, "GLOBAL", settings)
                self._execute_statements(con)
                self._apply_local_config(con, local_config, pragmas)
            except Exception:
                con.close()
                raise
            self._conn_borrows += 1
            return con


@configspec(init=False)
class LakeCredentials(DuckLakeCredentials):
    """``DuckLakeCredentials`` whose connections come from ``LakeConnections``."""

    def on_resolved(self) -> None:
        self.conn_pool = LakeConnections(self, always_open_connection=True)


@configspec
class LakeClientConfiguration(DuckLakeClientConfiguration):
    credentials: LakeCredentials = None


DUCKLAKE_TYPE = ducklake().destination_type
"""``dlt.destinations.ducklake``: the name pipeline state records for the destination."""


class warehouse_lake(ducklake):
    """dlt's ``ducklake`` destination with ``LakeCredentials``, under dlt's own type name."""

    @property
    def spec(self) -> type:
        return LakeClientConfiguration

    @property
    def destination_type(self) -> str:
        return DUCKLAKE_TYPE
