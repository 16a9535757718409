"""Benchmark: 1,000,000 landed events (100,000 customers) → raw → dim_customer.

Run with `make bench-load`. In one run, on the same files:

1. DuckDB alone reads the landed files into a table (`read_json`, explicit columns): baseline.
2. `flavours load` (dlt load + all SQL models + checks, one Dagster run in a fresh process) into
   an empty warehouse.
3. 10,000 new events on top of that 1,000,000-event history, versus the same 10,000 events on
   an empty warehouse (incremental cost must follow new events, not history).

Steps 1 and 2 alternate ``--repeat`` times (default 5), each load right after its baseline,
and the ratio is the median of the pairs' ratios: on a shared VM one run varies by +-13 %,
more than the margins being measured, and a pair shares the VM's moment. One DuckDB alone
run before the pairs is not counted: the first one after the files are written was the
slowest of its benchmark in three runs of four. Each step starts after a ``sync``, so no step
pays for the previous one's writeback. Every run is printed, with its CPU seconds (user +
system) beside its wall time. Each step runs in its own process; peak memory is that
process's own high-water RSS (VmHWM), the highest of the repeats.

Targets (DESIGN.md section 7): landed events -> dim_customer <= 4x DuckDB alone, peak < 2 GiB,
incremental <= 2x. The span landed events -> dim_customer is the load process from its start
until its dim_customer step ends: the steps after it (dim_customer_current, the daily report and
its contributions, the checks) are subtracted. The whole `flavours load`, those steps included,
is printed beside it, without a target. The loads log at WARNING unless FLAVOURS_LOG_LEVEL says
otherwise (INFO shows each step's time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.landing import LandingStore  # noqa: E402

ENVELOPE_COLUMNS = {
    "v": "INTEGER",
    "topic": "VARCHAR",
    "received_at": "TIMESTAMPTZ",
    "request_id": "VARCHAR",
    "source_ip": "VARCHAR",
    "headers": "JSON",
    "body_sha256": "VARCHAR",
    "payload": "JSON",
}
DIMENSION = "analytics/dim_customer"
DIMENSION_STEP = DIMENSION.replace("/", "__")  # Dagster's step key of that asset


class Measured(NamedTuple):
    """One measured process: wall and CPU (user + system) seconds, stdout, and its start on
    the monotonic clock (the same clock in every process on Linux)."""

    wall_s: float
    cpu_s: float
    out: str
    started_at: float


class Baseline(NamedTuple):
    """One run of DuckDB alone: wall seconds, CPU seconds and peak MiB."""

    wall_s: float
    cpu_s: float
    peak_mib: float


ACTIONS = ("UPDATE",) * 8 + ("DELETE",)
T0_MS = 1_700_000_000_000


def event_line(rng: random.Random, customer: int, action: str, ts_ms: int, xid: str) -> str:
    """One envelope line in the receiver's format (the documented payload's shape)."""
    cid = f"{customer:08d}-0000-4000-8000-{customer:012d}"
    user = (
        f'{{"id":"u-{customer}","userable_id":"{cid}","role":"CUSTOMER",'
        f'"name":"Customer {customer} v{rng.randrange(1000)}","username":null,'
        f'"email":"c{customer}@example.com","phone_prefix":"966",'
        f'"phone":"5{rng.randrange(10**7, 10**8)}","lang":"{rng.choice(("en", "ar"))}",'
        f'"fcm_token":"tok{rng.randrange(10**9)}","is_active":{rng.choice(("true", "false"))},'
        f'"email_verified_at":null,"phone_verified_at":null,"created_at":{T0_MS},'
        f'"updated_at":{ts_ms},"deleted_at":null}}'
    )
    payload = (
        f'{{"xid":"{xid}","action":"customers.{action}","timestamp":{ts_ms},'
        f'"data":{{"id":"{cid}","created_by":null,"qoyod_id":null,"type":null,'
        f'"gender":"{rng.choice(("male", "female"))}","tax_number":null,"zip_code":null,'
        f'"city":"{rng.choice(("Riyadh", "Jeddah", "Dammam"))}","district":null,'
        f'"street":null,"crn":null,"user":{user}}}}}'
    )
    received = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(milliseconds=ts_ms - T0_MS)
    return (
        f'{{"v":1,"topic":"customers","received_at":"{received:%Y-%m-%dT%H:%M:%S.%fZ}",'
        f'"request_id":"{uuid.UUID(int=rng.getrandbits(128))}","source_ip":"203.0.113.7",'
        f'"headers":{{"content-type":"application/json","user-agent":"Flavours"}},'
        f'"body_sha256":"{rng.getrandbits(256):064x}","payload":{payload}}}'
    )


def generate(landing: str, events: int, customers: int, files: int, seed: int, first: int = 0):
    """Land ``events`` events over ``customers`` customers in ``files`` objects, shuffled."""
    rng = random.Random(seed)
    lines = []
    per_customer = max(events // customers, 1)
    for customer in range(first, first + customers):
        ts = T0_MS + rng.randrange(10**9)
        for k in range(per_customer):
            action = "CREATE" if k == 0 and first == 0 else rng.choice(ACTIONS)
            ts += rng.randrange(1, 3_600_000)
            lines.append(
                event_line(rng, customer, action, ts, str(uuid.UUID(int=rng.getrandbits(128))))
            )
    rng.shuffle(lines)  # arrival order is not event order
    store = LandingStore(landing)
    size = -(-len(lines) // files)
    for i in range(files):
        chunk = [line.encode() for line in lines[i * size : (i + 1) * size]]
        store.land_batch(store.object_key("customers", datetime.now(UTC), "bench", i + 1), chunk)
    return len(lines)


def run_measured(argv: list[str], env: dict[str, str]) -> Measured:
    """Run a command and measure it.

    Dirty pages are written back first (``sync``): otherwise the writeback of the previous
    step's ~1.5 GB (warehouse, WAL, dlt's files) runs during the next measured step and lands
    on whichever step comes next, DuckDB alone or the load.
    """
    os.sync()
    started_at = time.monotonic()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, out, started_at)


DUCKDB_ALONE = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("set TimeZone = 'UTC'")
con.execute("set enable_progress_bar = false")
con.execute(
    "create table landed as select * from read_json(?, format='newline_delimited', columns=?)",
    [sys.argv[2] + '/customers/*/*.jsonl', COLUMNS],
)
print(con.sql("select count(*) from landed").fetchall()[0][0])
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024)
"""


def duckdb_alone(work: Path, landing: str, events: int) -> Baseline:
    """DuckDB alone reads the landed files into a table of a new file."""
    database = work / "duckdb-alone.duckdb"
    for leftover in work.glob("duckdb-alone.duckdb*"):
        leftover.unlink()
    script = DUCKDB_ALONE.replace("COLUMNS", repr(ENVELOPE_COLUMNS))
    measured = run_measured([sys.executable, "-c", script, str(database), landing], {**os.environ})
    count, peak = measured.out.split()[-2:]
    assert int(count) == events, measured.out
    return Baseline(measured.wall_s, measured.cpu_s, float(peak))


def load_env(work: Path, name: str, landing: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLAVOURS_LANDING_URL": landing,
        "FLAVOURS_WAREHOUSE": str(work / f"{name}.sqlite"),
        "FLAVOURS_DLT_DIR": str(work / f"{name}-dlt"),
        "FLAVOURS_LOG_LEVEL": os.environ.get("FLAVOURS_LOG_LEVEL", "WARNING"),
    }


def flavours_load(work: Path, name: str, landing: str) -> dict:
    measured = run_measured(
        [sys.executable, str(ROOT / "bench" / "load_once.py")], load_env(work, name, landing)
    )
    report = json.loads(measured.out.strip().splitlines()[-1])
    to_dimension = (
        report["finished_at"] - measured.started_at - after_dimension_s(report["steps_s"])
    )
    report.update(
        process_wall_s=measured.wall_s, process_cpu_s=measured.cpu_s, to_dimension_s=to_dimension
    )
    return report


def after_dimension_s(steps_s: dict[str, float]) -> float:
    """Seconds of the steps that ran after ``dim_customer`` (``dim_customer_current``, the
    daily report and its contributions, the checks), from the step durations in the order the
    steps ran.

    Landed events -> dim_customer is the process's time up to the end of the run minus these
    steps. The Dagster bookkeeping between them and the run's summary queries stay in, so the
    span is, if anything, overstated. The in-process executor runs one step at a time, so the
    steps after the dimension are exactly the ones listed after it.
    """
    steps = list(steps_s)
    later = steps[steps.index(DIMENSION_STEP) + 1 :]
    return sum(steps_s[step] for step in later)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--new-events", type=int, default=10_000)
    parser.add_argument(
        "--repeat", type=int, default=5, help="alternating runs of DuckDB alone and the load"
    )
    parser.add_argument("--quick", action="store_true", help="100k events, 10k customers")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.quick:
        args.events, args.customers, args.files = 100_000, 10_000, 4
    work = Path(tempfile.mkdtemp(prefix="flavours-bench-load-"))
    try:
        print(f"work folder {work}", flush=True)
        history = str(work / "landing")
        started = time.perf_counter()
        events = generate(history, args.events, args.customers, args.files, seed=1)
        print(f"generated {events:,} events in {time.perf_counter() - started:.1f} s", flush=True)

        warm_up = duckdb_alone(work, history, events)
        print(f"warm-up: duckdb alone {warm_up.wall_s:.1f} s (not counted)", flush=True)
        duck_runs, full_runs = [], []
        for attempt in range(1, args.repeat + 1):
            baseline = duckdb_alone(work, history, events)
            duck_runs.append(baseline)
            print(
                f"run {attempt}: duckdb alone {baseline.wall_s:.1f} s, "
                f"{baseline.cpu_s:.1f} CPU s, peak {baseline.peak_mib:.0f} MiB",
                flush=True,
            )
            # the last full load stays: it is the history of the incremental runs below
            if attempt > 1:
                shutil.rmtree(work / "history-dlt", ignore_errors=True)
                shutil.rmtree(work / "history.files", ignore_errors=True)
                for leftover in work.glob("history.sqlite*"):
                    leftover.unlink()
            full_runs.append(flavours_load(work, "history", history))
            assert full_runs[-1]["summary"]["raw_events"] == events, full_runs[-1]["summary"]
            run = full_runs[-1]
            print(
                f"run {attempt}: flavours load {run['process_wall_s']:.1f} s, "
                f"{run['process_cpu_s']:.1f} CPU s, peak {run['peak_mib']:.0f} MiB",
                flush=True,
            )

        # The same new events (updates of existing customers) on top of the history and alone.
        new_dir = work / "new"
        generate(str(new_dir), args.new_events, args.new_events // 2, 1, seed=2, first=1)
        for obj in LandingStore(str(new_dir)).list_objects("customers"):
            target = Path(history) / obj.key
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(new_dir / obj.key, target)
        on_history = flavours_load(work, "history", history)
        on_empty = flavours_load(work, "empty", str(new_dir))
        assert on_history["summary"]["objects_loaded"] == 1, on_history["summary"]
        assert on_empty["summary"]["raw_events"] == args.new_events, on_empty["summary"]

        report(args, events, duck_runs, full_runs, on_history, on_empty)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(args, events, duck_runs, full_runs, on_history, on_empty) -> None:
    duck_s = statistics.median(base.wall_s for base in duck_runs)
    duck_peak = max(base.peak_mib for base in duck_runs)
    full_s = statistics.median(run["process_wall_s"] for run in full_runs)
    full_peak = max(run["peak_mib"] for run in full_runs)
    full = min(full_runs, key=lambda run: abs(run["process_wall_s"] - full_s))  # the median run
    to_dimension_s = statistics.median(run["to_dimension_s"] for run in full_runs)
    pairs = list(zip(duck_runs, full_runs, strict=True))
    dim_ratio = statistics.median(run["to_dimension_s"] / base.wall_s for base, run in pairs)
    ratio = statistics.median(run["process_wall_s"] / base.wall_s for base, run in pairs)
    cpu_ratio = statistics.median(run["process_cpu_s"] / base.cpu_s for base, run in pairs)
    inc_ratio = on_history["process_wall_s"] / on_empty["process_wall_s"]
    inc_dim_ratio = on_history["models_s"].get(DIMENSION, 0) / max(
        on_empty["models_s"].get(DIMENSION, 0), 1e-9
    )
    rows = [
        (
            "DuckDB alone: read_json into a table",
            f"{duck_s:.1f} s",
            f"{duck_peak:.0f} MiB",
        ),
        (
            "flavours load (dlt + models + checks)",
            f"{full_s:.1f} s",
            f"{full_peak:.0f} MiB",
        ),
        ("  of which landed -> dim_customer", f"{to_dimension_s:.1f} s", ""),
        ("  of which dim_customer model", f"{full['models_s'].get(DIMENSION, 0):.2f} s", ""),
        (
            f"+{args.new_events:,} events on the history",
            f"{on_history['process_wall_s']:.1f} s",
            f"{on_history['peak_mib']:.0f} MiB",
        ),
        ("  of which dim_customer model", f"{on_history['models_s'].get(DIMENSION, 0):.2f} s", ""),
        (
            f"same {args.new_events:,} events, empty warehouse",
            f"{on_empty['process_wall_s']:.1f} s",
            f"{on_empty['peak_mib']:.0f} MiB",
        ),
        ("  of which dim_customer model", f"{on_empty['models_s'].get(DIMENSION, 0):.2f} s", ""),
    ]
    print()
    print(
        f"{events:,} events, {args.customers:,} customers, {args.files} files, "
        f"{os.cpu_count()} cores; the first three rows: medians of {len(full_runs)} runs"
    )
    for name, seconds, memory in rows:
        print(f"  {name:<44} {seconds:>9} {memory:>10}")
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in full["steps_s"].items())
    print(f"  steps of the median full load: {steps}")

    def each_pair(span: str) -> str:
        return ", ".join(
            f"{run[span]:.1f}/{base.wall_s:.1f} s = {run[span] / base.wall_s:.2f}x"
            for base, run in pairs
        )

    print(f"  each pair, flavours load / DuckDB alone: {each_pair('process_wall_s')}")
    print(f"  each pair, landed -> dim_customer / DuckDB alone: {each_pair('to_dimension_s')}")
    print(f"  landed -> dim_customer / DuckDB alone, median pair: {dim_ratio:.2f}x (target <= 4x)")
    print(
        f"  flavours load / DuckDB alone, median pair: {ratio:.2f}x, in CPU seconds "
        f"(user + system): {cpu_ratio:.2f}x (no target: it also builds dim_customer_current "
        "and rpt_customer_daily and runs the checks)"
    )
    print(f"  peak memory: {full_peak:.0f} MiB (target < 2048 MiB)")
    print(f"  incremental / empty, whole run: {inc_ratio:.2f}x (target <= 2x)")
    print(f"  incremental / empty, dim_customer model alone: {inc_dim_ratio:.2f}x")


if __name__ == "__main__":
    main()
