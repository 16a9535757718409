"""bench/bench_load.py measures what it prints; bench/bench_s3_fetch.py runs.

The benchmark itself runs only by hand (`make bench-load`), so these tests run its own
functions on a few hundred events: the generated events are all valid and land in the
documented layout, DuckDB alone reads every one of them, and the span landed ->
dim_customer leaves out exactly the steps that run after the dimension.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from core.landing import LandingStore

ROOT = Path(__file__).resolve().parents[2]
EVENTS, CUSTOMERS, FILES = 600, 60, 3
AFTER_DIMENSION = [
    "analytics__dim_customer_current",
    "intermediate__int_customer_daily_contributions",
    "analytics__rpt_customer_daily",
]
CHECKS_STEP = "dimension_checks"
ACTIONS_STEPS = ["ops__customer_actions", "ops__customer_actions_no_dead_actions"]


@pytest.fixture(scope="module")
def bench_load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "bench_load.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured(bench_load: ModuleType, tmp_path_factory: pytest.TempPathFactory):
    """One generated landing folder, DuckDB alone on it and one measured `flavours load`."""
    work = tmp_path_factory.mktemp("bench")
    landing = str(work / "landing")
    events = bench_load.generate(landing, EVENTS, CUSTOMERS, FILES, seed=1)
    baseline = bench_load.duckdb_alone(work, landing, events)  # asserts it read every event
    return events, landing, baseline, bench_load.flavours_load(work, "history", landing)


def test_generated_events_are_all_valid_and_loaded(measured) -> None:
    events, landing, baseline, report = measured
    assert events == EVENTS
    objects = LandingStore(landing).list_objects("customers")
    assert len(objects) == FILES
    summary = report["summary"]
    assert summary["objects_loaded"] == FILES
    assert summary["raw_events"] == EVENTS
    assert summary["rejected"] == 0
    assert summary["staged_events"] == EVENTS  # every xid distinct
    assert summary["customers"] == CUSTOMERS
    assert summary["checks_failed"] == []
    assert baseline.wall_s > 0
    assert baseline.cpu_s > 0
    assert baseline.peak_mib > 0


def test_span_to_dimension_leaves_out_exactly_the_steps_after_it(bench_load, measured) -> None:
    *_, report = measured
    steps = list(report["steps_s"])
    assert bench_load.DIMENSION_STEP == "analytics__dim_customer"
    later = steps[steps.index(bench_load.DIMENSION_STEP) + 1 :]
    # what the benchmark's output says the span is without
    assert sorted(later) == sorted([*AFTER_DIMENSION, CHECKS_STEP, *ACTIONS_STEPS])
    assert steps.index("staging__stg_customer_events") < steps.index(bench_load.DIMENSION_STEP)
    after = bench_load.after_dimension_s(report["steps_s"])
    assert after == pytest.approx(sum(report["steps_s"][step] for step in later))
    assert 0 < report["to_dimension_s"] < report["process_wall_s"]
    assert report["to_dimension_s"] == pytest.approx(
        report["process_wall_s"] - after, abs=1.0
    )  # only the process's exit and the monotonic clock reads differ


def test_after_dimension_sums_only_the_steps_listed_after_it(bench_load) -> None:
    steps = {"load": 5.0, bench_load.DIMENSION_STEP: 2.0, "report": 0.5, "checks": 0.25}
    assert bench_load.after_dimension_s(steps) == 0.75
    with pytest.raises(ValueError, match=bench_load.DIMENSION_STEP):
        bench_load.after_dimension_s({"load": 5.0})


def test_s3_fetch_benchmark_runs_and_compares_on_the_same_objects() -> None:
    # bench_s3_fetch asserts itself that both ways return the same bytes and that the load
    # takes every object; a few objects with a small delay keep this short
    script = str(ROOT / "bench" / "bench_s3_fetch.py")
    proc = subprocess.Popen(
        [sys.executable, script, "--objects", "24", "--delay-ms", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.terminate()  # the script stops moto and its proxy on SIGTERM
            proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "24 one-event objects on moto's S3 server, 2 ms added each way" in out
    assert "x faster)" in out
