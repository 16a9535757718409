"""Benchmark (``make bench-dashboard``): the dashboard on a 1M-event warehouse, 2 cores.

1,000,000 events of 100,000 customers are landed and loaded (``flavours load``), then:

1. every query the dashboard runs (``dashboard.data``: the overview, the weekly series over the
   whole range, each breakdown, a customer lookup by e-mail and its timeline), ``--queries``
   times each, each on a new reader connection as the page's requests do: p50 and p99;
2. first paint: headless Chromium loads the page served by ``flavours dashboard`` and returns
   its DOM once every request has settled, against the same browser loading a static page of
   the same server (the browser's own start-up) in the same run.

Targets (issue: fast on the 1M-event warehouse): first paint within 2 s, every query under
500 ms. Needs Debian's ``chromium`` for step 2. Everything started here is stopped here.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_load import generate, load_env  # noqa: E402
from cli import devtools  # noqa: E402
from core.settings import Settings  # noqa: E402
from dashboard import data  # noqa: E402

FLAVOURS = str(Path(sys.executable).parent / "flavours")


def timed(action, times: int) -> list[float]:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return seconds


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def browser_seconds(chromium: str, url: str, work: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={work / 'chromium'}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--pages", type=int, default=5)
    args = parser.parse_args()
    customers = max(args.events // 10, 1)
    work = Path(tempfile.mkdtemp(prefix="flavours-bench-dashboard-"))
    try:
        landing = str(work / "landing")
        generate(landing, args.events, customers, 20, seed=5)
        env = load_env(work, "warehouse", landing)
        subprocess.run([FLAVOURS, "load"], env=env, check=True, stdout=subprocess.DEVNULL)
        settings = Settings(
            landing_url=landing,
            warehouse=env["FLAVOURS_WAREHOUSE"],
            dlt_dir=env["FLAVOURS_DLT_DIR"],
        )
        overview = data.overview(settings)
        start, end = overview.first_day or date.today(), overview.last_day or date.today()
        email = "c4242@example.com"
        queries = {
            "overview": lambda: data.overview(settings),
            "weekly series": lambda: data.daily(settings, start, end, "week"),
            **{
                f"breakdown: {label}": (lambda label=label: data.breakdown(settings, label))
                for label in data.BREAKDOWNS
            },
            "find by e-mail": lambda: data.find_customer(settings, email),
            "timeline": lambda: data.timeline(
                settings, "00004242-0000-4000-8000-000000004242", False
            ),
        }
        results = {name: timed(query, args.queries) for name, query in queries.items()}

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        paint = baseline = None
        if chromium:
            port = devtools.free_port()
            server = devtools.start([FLAVOURS, "dashboard", "--port", str(port)], env)
            try:
                url = f"http://127.0.0.1:{port}/"
                devtools.wait_healthy(f"{url}healthz", server, what="dashboard")
                browser_seconds(chromium, url, work)  # warm-up: the server's first page
                baseline = [
                    browser_seconds(chromium, f"{url}healthz", work) for _ in range(args.pages)
                ]
                paint = [browser_seconds(chromium, url, work) for _ in range(args.pages)]
            finally:
                devtools.stop(server)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\ndashboard on a {args.events:,}-event warehouse ({customers:,} customers), 2 cores")
    print(f"  {'query':28} {'p50 ms':>8} {'p99 ms':>8}")
    for name, seconds in results.items():
        print(f"  {name:28} {statistics.median(seconds) * 1000:8.1f} {p99(seconds) * 1000:8.1f}")
    slowest = max(p99(seconds) for seconds in results.values())
    print(f"  slowest query p99: {slowest * 1000:.0f} ms (target < 500 ms)")
    if paint is None or baseline is None:
        print("  first paint: not measured (no chromium; `make test` installs Debian's)")
        return
    page, blank = statistics.median(paint), statistics.median(baseline)
    print(
        f"  first paint (Chromium, DOM settled): median {page:.2f} s of {args.pages}; the same "
        f"browser on a static page of the server {blank:.2f} s; the page's own time "
        f"{page - blank:.2f} s (target: first paint within 2 s)"
    )


if __name__ == "__main__":
    main()
