"""Beyond one machine: a Postgres catalog and data on S3, shared by several loaders and readers.

A throwaway Postgres cluster (Debian's ``postgresql``) and moto's S3 server, both on loopback.
Two ``flavours load`` processes (two Dagster workers, each with its own dlt folder) start at
once over the same landed objects while a reader process queries throughout.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import boto3
import psycopg
import pytest

from core.landing import LandingStore
from core.settings import Settings
from tests.conftest import VENV_BIN, stop_process, wait_until
from tests.landing_helpers import land
from tests.pipelines.conftest import load, query
from tests.pipelines.test_readers import customers, published_answers, reader_process
from tests.postgres_server import PostgresServer, find_postgres_bin, postgres_server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bindir, why = find_postgres_bin()
    if bindir is None:
        pytest.skip(why)
    with postgres_server() as server:
        yield server


def start_load(settings: Settings, dlt_dir: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": settings.landing_url,
        "FLAVOURS_WAREHOUSE": settings.warehouse,
        "FLAVOURS_WAREHOUSE_DATA_URL": settings.warehouse_data_url,
        "FLAVOURS_DLT_DIR": dlt_dir,
        "FLAVOURS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [str(VENV_BIN / "flavours"), "load"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_two_loaders_and_a_reader_share_a_postgres_catalog_and_s3_data(postgres, s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    settings = Settings(
        landing_url=f"s3://{bucket}/landing",
        warehouse=postgres.url(),
        warehouse_data_url=f"s3://{bucket}/warehouse/",
        dlt_dir=str(tmp_path / "dlt-first"),
    )
    store = LandingStore(settings.landing_url)
    land(store, customers("first", 30, 1_700_000_000_000))
    load(settings)

    with reader_process(settings, tmp_path) as reader:
        land(store, customers("second", 20, 1_700_000_100_000))
        land(store, customers("third", 25, 1_700_000_200_000))
        workers = [start_load(settings, str(tmp_path / f"dlt-{n}")) for n in range(2)]
        try:
            outputs = [worker.communicate(timeout=300)[0] for worker in workers]
        finally:
            for worker in workers:
                stop_process(worker)
        final = published_answers(settings)[-1]
        wait_until(lambda: final in reader.answers("new"), timeout=60, what="a new connection")

    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
    # each landed object is in the warehouse once, whichever worker took it
    assert query(settings, "select count(*), count(distinct customer_id) from raw.customer_events")[
        0
    ] == (75, 75)
    assert query(settings, "select count(*) from analytics.dim_customer_current") == [(75,)]
    assert final == (75, 75, 75, 75, 75)
    assert reader.errors() == []
    assert {tuple(line["answer"]) for line in reader.lines() if "answer" in line} <= set(
        published_answers(settings)
    )

    # the data is Parquet on S3, the catalog is tables in Postgres
    s3 = boto3.client("s3", endpoint_url=s3_env.endpoint, **_boto_credentials(s3_env))
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="warehouse/")
    assert any(item["Key"].endswith(".parquet") for item in listed.get("Contents", []))
    assert not list(tmp_path.glob("**/*.parquet"))
    with psycopg.connect(postgres.url()) as pg:
        (tables,) = pg.execute(
            "select count(*) from information_schema.tables where table_name like 'ducklake_%'"
        ).fetchone()
    assert tables > 10


def _boto_credentials(server) -> dict[str, str]:
    return {
        "aws_access_key_id": server.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": server.env["AWS_SECRET_ACCESS_KEY"],
        "region_name": server.env["AWS_DEFAULT_REGION"],
    }
