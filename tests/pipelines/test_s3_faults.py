"""Loading from object storage that throttles or fails: moto's S3 server behind a proxy that
answers ``503 SlowDown`` (tests/s3_faults.py). Throttled reads are retried and nothing is
lost; a read that keeps failing fails the load with the object named, and the next load,
once the store serves again, loads every object exactly once."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from core.landing import LandingStore
from core.settings import Settings
from pipelines.run import failure_reason
from tests.landing_helpers import customer_event, envelope, land
from tests.pipelines.conftest import load, query
from tests.s3_faults import FaultyS3Proxy
from tests.s3_server import S3Server


@pytest.fixture
def faulty_s3(s3_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyS3Proxy]:
    proxy = FaultyS3Proxy(s3_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def s3_settings(s3_env: S3Server, tmp_path) -> Settings:
    return Settings(
        landing_url=f"s3://{s3_env.new_bucket()}/flavours",
        warehouse=str(tmp_path / "warehouse.sqlite"),
        dlt_dir=str(tmp_path / "dlt"),
    )


def land_objects(settings: Settings, objects: int, first: int = 0) -> list[str]:
    store = LandingStore(settings.landing_url)
    return [
        land(store, [envelope(customer_event(f"c-{n}", xid=f"x-{n}-{i}")) for i in range(5)])
        for n in range(first, first + objects)
    ]


def test_throttled_reads_are_retried_and_every_event_loads(faulty_s3, s3_settings):
    keys = land_objects(s3_settings, 20)
    faulty_s3.throttle_gets(2)

    summary = load(s3_settings)

    assert summary.objects_loaded == 20
    assert query(s3_settings, "select count(*), count(distinct xid) from raw.customer_events") == [
        (100, 100)
    ]
    gets = {path.rsplit("/flavours/", 1)[1]: n for path, n in faulty_s3.object_gets.items()}
    assert gets == {key: 3 for key in keys}


def test_a_read_that_keeps_failing_fails_the_load_naming_the_object_and_loses_nothing(
    faulty_s3, s3_settings
):
    land_objects(s3_settings, 3)
    load(s3_settings)
    later = land_objects(s3_settings, 3, first=3)
    faulty_s3.fail_gets_of(later[1])
    loaded_before = query(s3_settings, "select count(*) from raw.landed_objects")

    with pytest.raises(PipelineStepFailed, match=re.escape(later[1])) as failed:
        load(s3_settings)

    reason = failure_reason(failed.value)  # what `flavours load` prints
    assert reason.startswith(f"LandingError: could not read landed object {later[1]} from s3://")
    assert "reduce your request rate" in reason
    assert query(s3_settings, "select count(*) from raw.customer_events") == [(15,)]
    assert query(s3_settings, "select count(*) from raw.landed_objects") == loaded_before

    faulty_s3.heal()
    summary = load(s3_settings)

    assert summary.objects_loaded == 3
    assert query(s3_settings, "select count(*), count(distinct xid) from raw.customer_events") == [
        (30, 30)
    ]
