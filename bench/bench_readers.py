"""Benchmark: reader query latency on a 1M-event warehouse, idle and while a 1M-event load runs.

Run with `make bench-readers`. In one run:

1. 1,000,000 events of 100,000 customers are landed and loaded (`flavours load`).
2. A reader (``connect_reader()``, this process) asks two questions in turn, each ``--queries``
   times, with nothing else running: the count of current customers
   (``select count(*) from analytics.dim_customer_current``) and one customer's history (a
   random customer's versions, ``where customer_id = ?``). Each round opens a new connection,
   as a dashboard's request does (timed on its own, ``connect``), and asks both on it.
3. Another 1,000,000 events (100,000 more customers) are landed and ``flavours load`` starts in
   its own process; the reader asks the same questions in the same way until the load ends.

Printed: p50 and p99 of each question idle and during the load, their ratios, the errors (there
must be none) and how long the load took. Both machines' cores are shared by the load and the
reader, as they are when an analyst queries during a scheduled load.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_load import generate, load_env  # noqa: E402
from core.settings import Settings  # noqa: E402
from warehouse import connect_reader  # noqa: E402

FLAVOURS = str(Path(sys.executable).parent / "flavours")
COUNT_CURRENT = "select count(*) from analytics.dim_customer_current"
HISTORY = "select * from analytics.dim_customer where customer_id = ? order by valid_from"


def customer_id(number: int) -> str:
    """The id bench_load.generate gives customer ``number``."""
    return f"{number:08d}-0000-4000-8000-{number:012d}"


class Samples:
    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {"count_current": [], "history": [], "connect": []}
        self.errors: list[str] = []

    def time(self, name: str, action) -> None:
        started = time.perf_counter()
        try:
            action()
        except Exception as error:  # every failure is a finding, counted and printed
            self.errors.append(f"{name}: {type(error).__name__}: {error}")
            return
        self.seconds[name].append(time.perf_counter() - started)


def ask(settings: Settings, samples: Samples, rng: random.Random, customers: int) -> None:
    """One round: a new connection, then each question once on it."""
    started = time.perf_counter()
    try:
        con = connect_reader(settings)
    except Exception as error:
        samples.errors.append(f"connect: {type(error).__name__}: {error}")
        return
    samples.seconds["connect"].append(time.perf_counter() - started)
    try:
        samples.time("count_current", lambda: con.sql(COUNT_CURRENT).fetchall())
        who = customer_id(rng.randrange(customers))
        samples.time("history", lambda: con.execute(HISTORY, [who]).fetchall())
    finally:
        con.close()


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200, help="idle rounds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="flavours-bench-readers-"))
    try:
        landing = str(work / "landing")
        env = load_env(work, "warehouse", landing)
        settings = Settings(landing_url=landing, warehouse=env["FLAVOURS_WAREHOUSE"])
        generate(landing, args.events, args.customers, args.files, seed=1)
        subprocess.run([FLAVOURS, "load"], env=env, check=True)

        rng = random.Random(7)
        idle = Samples()
        for _ in range(args.queries):
            ask(settings, idle, rng, args.customers)

        generate(landing, args.events, args.customers, args.files, seed=2, first=args.customers)
        during = Samples()
        started = time.perf_counter()
        load = subprocess.Popen([FLAVOURS, "load"], env=env)
        while load.poll() is None:
            ask(settings, during, rng, args.customers * 2)
        load_s = time.perf_counter() - started
        if load.returncode != 0:
            raise SystemExit(f"the load during the queries failed ({load.returncode})")
        report(args, idle, during, load_s)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args, idle: Samples, during: Samples, load_s: float) -> None:
    print(
        f"\nreader latency on a {args.events:,}-event warehouse, machine with "
        f"{os.cpu_count()} cores; during: a {args.events:,}-event load ({load_s:.1f} s)"
    )
    print(f"{'':16} {'idle p50':>9} {'p99':>9} {'during p50':>11} {'p99':>9} {'p99 ratio':>10}")
    for name in ("count_current", "history", "connect"):
        i50, i99 = percentile(idle.seconds[name], 50), percentile(idle.seconds[name], 99)
        d50, d99 = percentile(during.seconds[name], 50), percentile(during.seconds[name], 99)
        print(
            f"{name:16} {i50 * 1000:7.1f}ms {i99 * 1000:7.1f}ms {d50 * 1000:9.1f}ms "
            f"{d99 * 1000:7.1f}ms {d99 / i99:9.2f}x"
        )
    print(
        f"samples: idle {len(idle.seconds['count_current'])}, during the load "
        f"{len(during.seconds['count_current'])}; errors: idle {len(idle.errors)}, "
        f"during {len(during.errors)}"
    )
    for error in (idle.errors + during.errors)[:10]:
        print(f"  {error}")
    if idle.errors or during.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
