"""Receiver benchmark (``make bench-ingest``): durable-ack throughput and ack latency.

Starts ``flavours serve`` (gunicorn, 2 workers, threaded) on loopback, landing in a temporary
folder on local disk, and measures in one run:

a. ``GET /healthz``, the trivial endpoint, at a fixed concurrency (closed loop);
b. ``POST /webhooks/flavours/customers`` of the documented customer event with fresh ids, at
   the same concurrency: every 202 means the event is durable (fsync'd and renamed);
c. an open loop at a fixed rate (default 500 events/s): ack latency measured from the moment
   each request was due, so a slow answer cannot hide the requests queued behind it.

(a) and (b) run as a pair, back to back, ``--repeat`` times (3); a pair shares the VM's moment,
so the ratio judged is the median of the pairs' ratios, and the throughput the median of (b).
Targets (DESIGN.md section 7): (b) >= 50 % of (a) (aim 70 %), >= 2,000 events/s on 2 cores;
p99 ack latency <= 50 ms in (c). At the end every acked event must be in the landing folder.
The load comes from several processes, each with persistent keep-alive connections of a lean
client (``KeepAliveClient``: prebuilt request bytes, a minimal response parser), so that the
load generator, which shares the machine's CPUs with the server, takes as little of them as it
can; ``--client http.client`` uses the standard library's client instead.
Everything started here is stopped here. ``--env NAME=VALUE`` passes settings to the receiver
(e.g. ``FLAVOURS_BATCH_MAX_WAIT_MS``) to compare configurations.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cli import devtools

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT.parent / "shared" / "flavours" / "customer-create.json"
if not EXAMPLE.exists():
    EXAMPLE = ROOT / "tests" / "data" / "customer-create.json"
HOST = "127.0.0.1"
WEBHOOK = "/webhooks/flavours/customers"
# The ids of the documented example, replaced by fresh ones in every event sent.
EXAMPLE_XID = b"9a48c3ad-35e9-4929-b714-6fe30f4afc93"
EXAMPLE_CUSTOMER_ID = b"c4a868ea-735e-461f-868c-a5d2eaa212d0"
EXAMPLE_USER_ID = b"fe4aa1ef-b35c-4e69-be60-fc34ab7447e5"
EXAMPLE_TIMESTAMP = b"1697681187551"
OPEN_LOOP_CONNECTIONS = 32
"""Enough that requests due at the fixed rate never wait for a free connection of ours."""


@dataclass
class Load:
    """What one load-generator process is asked to do."""

    port: int
    path: str
    connections: int
    start_wall: float
    warmup_s: float
    duration_s: float
    template: bytes | None = None  # POST bodies are made from it; None means GET
    rate_per_s: float | None = None  # open loop at this rate; None means closed loop
    offset_s: float = 0.0
    client: str = "lean"


@dataclass
class LoadResult:
    """Measured in the window after warm-up: statuses, latencies; acked xids over the whole run."""

    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    late_starts: int = 0
    cpu_s: float = 0.0
    """CPU seconds the load generator itself used (the whole phase, warm-up included)."""


class ResponseError(Exception):
    """The server's answer could not be read (closed connection, bad framing)."""


class KeepAliveClient:
    """One persistent HTTP/1.1 connection: request bytes built once, responses parsed minimally.

    ``http.client`` parses every response's headers with ``email.parser``, which costs more CPU
    per request than answering ``/healthz`` does; on a 2-core machine the load generator's CPU
    is taken from the server under test. Answers must carry ``Content-Length`` (the receiver's
    always do).
    """

    def __init__(self, host: str, port: int, timeout: float = 30) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{host}:{port}".encode()
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes | None = None) -> int:
        """Send one request and read its whole answer; returns the status code."""
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), path.encode(), self.host)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.sock.sendall(head + b"\r\n" + (body or b""))
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        header, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next(
            (int(line[15:]) for line in lines if line[:15].lower() == b"content-length:"), None
        )
        if length is None:
            raise ResponseError("answer without Content-Length")
        while len(self.buffer) < length:
            self._receive()
        self.buffer = self.buffer[length:]
        return status

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ResponseError("connection closed by the server")
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


class StdlibClient:
    """The same interface over ``http.client`` (``--client http.client``)."""

    def __init__(self, host: str, port: int, timeout: float = 30) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None) -> int:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body, headers)
        response = self.conn.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self.conn.close()


CLIENTS = {"lean": KeepAliveClient, "http.client": StdlibClient}


def fresh_event(template: bytes) -> tuple[str, bytes]:
    """The example event with a new xid, customer id, user id and timestamp."""
    xid = str(uuid.uuid4())
    body = (
        template.replace(EXAMPLE_XID, xid.encode())
        .replace(EXAMPLE_CUSTOMER_ID, str(uuid.uuid4()).encode())
        .replace(EXAMPLE_USER_ID, str(uuid.uuid4()).encode())
        .replace(EXAMPLE_TIMESTAMP, str(int(time.time() * 1000)).encode())
    )
    return xid, body


def run_load(load: Load) -> LoadResult:
    """One load-generator process: ``load.connections`` threads, one keep-alive connection each."""
    result = LoadResult()
    lock = threading.Lock()
    # Wall-clock start shared by all processes, turned into this process's monotonic clock.
    start = time.perf_counter() + (load.start_wall - time.time())
    measure_from = start + load.warmup_s
    end = measure_from + load.duration_s
    next_index = iter(range(10**9))
    client_class = CLIENTS[load.client]

    def due_time() -> float | None:
        """Open loop: when the next request is due (None past the end)."""
        with lock:
            index = next(next_index)
        due = start + load.offset_s + index / load.rate_per_s
        return due if due < end else None

    def worker() -> None:
        conn = None
        statuses: dict[int, int] = {}
        latencies: list[float] = []
        acked: list[str] = []
        errors = late = 0
        delay = start - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        while True:
            if load.rate_per_s is None:
                began = time.perf_counter()
                if began >= end:
                    break
            else:
                due = due_time()
                if due is None:
                    break
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -0.001:
                    late += 1
                began = due
            try:
                if conn is None:
                    conn = client_class(HOST, load.port)
                if load.template is None:
                    status = conn.request("GET", load.path)
                else:
                    xid, body = fresh_event(load.template)
                    status = conn.request("POST", load.path, body)
            except (OSError, http.client.HTTPException, ResponseError, ValueError):
                errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            done = time.perf_counter()
            if load.template is not None and status == 202:
                acked.append(xid)
            # Closed loop counts what completed in the window; open loop every request due in it.
            if measure_from <= began and (done <= end or load.rate_per_s is not None):
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(done - began)
        if conn is not None:
            conn.close()
        with lock:
            for status, count in statuses.items():
                result.statuses[status] = result.statuses.get(status, 0) + count
            result.latencies.extend(latencies)
            result.acked.extend(acked)
            result.errors += errors
            result.late_starts += late

    cpu_before = time.process_time()
    threads = [threading.Thread(target=worker) for _ in range(load.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.cpu_s = time.process_time() - cpu_before
    return result


@dataclass
class Phase:
    name: str
    duration_s: float
    result: LoadResult
    warmup_s: float = 0.0
    server_cpu_s: float = float("nan")
    """CPU seconds the receiver's processes used during the measured window."""
    machine_busy: float = float("nan")
    """Share of all CPUs busy during the measured window (receiver, load and the rest)."""

    @property
    def server_cpu_ms_per_request(self) -> float:
        requests = sum(self.result.statuses.values())
        return self.server_cpu_s * 1000 / requests if requests else float("nan")

    @property
    def cpu_bound_per_second(self) -> float:
        """Requests/s if this run had every CPU to itself: CPUs / (server + load CPU per request).

        Other programs on a shared machine lower the measured rate but hardly the CPU each
        request costs, so this shows what the machine would do alone.
        """
        per_request = self.server_cpu_ms_per_request + self.load_cpu_ms_per_request
        return (os.cpu_count() or 1) * 1000 / per_request if per_request else float("nan")

    @property
    def load_cpu_ms_per_request(self) -> float:
        """The load generator's CPU per request (its CPU and requests over the whole phase)."""
        measured = sum(self.result.statuses.values())
        sent = measured * (self.duration_s + self.warmup_s) / self.duration_s
        return self.result.cpu_s * 1000 / sent if sent else float("nan")

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.result.statuses.items() if 200 <= status < 300)

    @property
    def per_second(self) -> float:
        return self.ok / self.duration_s

    def percentile_ms(self, q: float) -> float:
        values = sorted(self.result.latencies)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    @property
    def failures(self) -> int:
        bad = sum(n for status, n in self.result.statuses.items() if not 200 <= status < 300)
        return bad + self.result.errors


def run_phase(
    name: str,
    pool,
    server: subprocess.Popen,
    port: int,
    procs: int,
    connections: int,
    args: argparse.Namespace,
    template: bytes | None,
    rate: float | None = None,
) -> Phase:
    """Run one phase across ``procs`` load processes and merge their results."""
    path = WEBHOOK + f"?token={args.token}" if template is not None else "/healthz"
    start_wall = time.time() + 0.5
    loads = [
        Load(
            port=port,
            path=path,
            connections=connections // procs + (i < connections % procs),
            start_wall=start_wall,
            warmup_s=args.warmup,
            duration_s=args.open_duration if rate else args.duration,
            template=template,
            rate_per_s=rate / procs if rate else None,
            offset_s=i / rate if rate else 0.0,
            client=args.client,
        )
        for i in range(procs)
    ]
    samples: list[tuple[float, tuple[int, int]]] = []

    def sample() -> None:
        samples.append((group_cpu_seconds(server.pid), machine_ticks()))

    window_start = start_wall + args.warmup - time.time()
    timers = [
        threading.Timer(window_start, sample),
        threading.Timer(window_start + loads[0].duration_s, sample),
    ]
    for timer in timers:
        timer.start()
    merged = LoadResult()
    for part in pool.map(run_load, loads):
        for status, count in part.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
        merged.latencies.extend(part.latencies)
        merged.acked.extend(part.acked)
        merged.errors += part.errors
        merged.late_starts += part.late_starts
        merged.cpu_s += part.cpu_s
    for timer in timers:
        timer.join()
    phase = Phase(name, loads[0].duration_s, merged, args.warmup)
    if len(samples) == 2:
        (cpu0, (busy0, all0)), (cpu1, (busy1, all1)) = samples
        phase.server_cpu_s = cpu1 - cpu0
        phase.machine_busy = (busy1 - busy0) / max(all1 - all0, 1)
    return phase


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


def group_cpu_seconds(group: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # fields after the name: state, ppid, pgrp, ...
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_receiver(workdir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    """``flavours serve`` on loopback in its own process group; waits until /healthz answers."""
    port = devtools.free_port(HOST)
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": str(workdir / "landing"),
        "FLAVOURS_WEBHOOK_TOKEN": args.token,
        "TMPDIR": str(workdir),
    }
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    command = [str(Path(sys.executable).parent / "flavours"), "serve", "--host", HOST]
    command += ["--port", str(port), "--workers", str(args.workers)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    with (workdir / "receiver.log").open("wb") as log:
        proc = devtools.start(command, env, stdout=log, stderr=subprocess.STDOUT)
    try:
        devtools.wait_healthy(f"http://{HOST}:{port}/healthz", proc)
    except RuntimeError as exc:
        devtools.stop(proc)
        raise SystemExit(f"{exc}:\n{(workdir / 'receiver.log').read_text()}") from None
    return proc, port


def landed(landing: Path) -> tuple[set[str], int, int]:
    """Distinct xids, lines and objects landed under ``customers/``; every line must parse."""
    xids, lines, objects = set(), 0, 0
    for path in (landing / "customers").rglob("*.jsonl"):
        if path.name.startswith("."):
            continue
        objects += 1
        for line in path.read_bytes().splitlines():
            xids.add(json.loads(line)["payload"]["xid"])
            lines += 1
    return xids, lines, objects


def print_report(
    pairs: list[tuple[Phase, Phase]], steady: Phase, args: argparse.Namespace
) -> dict[str, float]:
    """Every phase, then the targets: each ratio is the median of the pairs' ratios (a pair's
    two phases run back to back, so they share the VM's moment), throughput the median of the
    durable phases."""
    from tabulate import tabulate

    phases = [*(phase for pair in pairs for phase in pair), steady]
    rows = [
        [
            p.name,
            p.ok,
            f"{p.per_second:,.0f}",
            f"{p.percentile_ms(0.50):.1f}",
            f"{p.percentile_ms(0.95):.1f}",
            f"{p.percentile_ms(0.99):.1f}",
            f"{p.percentile_ms(1.0):.1f}",
            p.failures,
            f"{p.server_cpu_ms_per_request:.2f}",
            f"{p.load_cpu_ms_per_request:.2f}",
            f"{p.machine_busy:.0%}",
            f"{p.cpu_bound_per_second:,.0f}",
        ]
        for p in phases
    ]
    headers = ["phase", "2xx", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "non-2xx/errors"]
    headers += ["server CPU ms/req", "load CPU ms/req", "CPUs busy", "CPU-bound req/s"]
    print(tabulate(rows, headers=headers, colalign=("left",) + ("right",) * 11))
    ratios = [durable.per_second / trivial.per_second for trivial, durable in pairs]
    cpu_ratios = [
        durable.cpu_bound_per_second / trivial.cpu_bound_per_second for trivial, durable in pairs
    ]
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
    events_per_s = statistics.median(durable.per_second for _, durable in pairs)
    p99 = steady.percentile_ms(0.99)
    checks = [
        ["durable-ack / trivial, median pair", f"{ratio:.0%}", ">= 50 % (aim 70 %)", ratio >= 0.5],
        ["same, CPU-bound", f"{cpu_ratio:.0%}", ">= 50 % (aim 70 %)", cpu_ratio >= 0.5],
        [
            "durable-ack events/s",
            f"{events_per_s:,.0f}",
            ">= 2,000",
            events_per_s >= 2000,
        ],
        [f"p99 ack at {args.rate:g}/s", f"{p99:.1f} ms", "<= 50 ms", p99 <= 50],
    ]
    print()
    print("each pair, durable / trivial: " + ", ".join(f"{r:.0%}" for r in ratios))
    print("each pair, same CPU-bound: " + ", ".join(f"{r:.0%}" for r in cpu_ratios))
    print()
    print(
        tabulate(
            [[*c[:3], "ok" if c[3] else "MISSED"] for c in checks],
            headers=["measure", "value", "target", ""],
        )
    )
    return {
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "events_per_s": events_per_s,
        "p99_ms": p99,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=12, help="seconds per closed phase")
    parser.add_argument("--open-duration", type=float, default=12, help="seconds of open loop")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    parser.add_argument(
        "--repeat", type=int, default=3, help="pairs of closed phases (trivial, then durable)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--rate", type=float, default=500, help="open-loop events/s")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, help="threads per worker (flavours serve default)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="receiver setting"
    )
    parser.add_argument(
        "--client", choices=sorted(CLIENTS), default="lean", help="load generator's HTTP client"
    )
    parser.add_argument("--quick", action="store_true", help="3 s phases, for a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = args.open_duration = 3.0
        args.warmup = 0.5
    args.token = secrets.token_urlsafe(24)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    template = EXAMPLE.read_bytes()
    busy0, all0 = machine_ticks()
    time.sleep(1)
    busy1, all1 = machine_ticks()
    idle_busy = (busy1 - busy0) / max(all1 - all0, 1)
    print(f"machine busy before the run: {idle_busy:.0%} of {os.cpu_count()} CPUs")
    if idle_busy > 0.1:
        print("warning: something else is using the CPUs; figures will be low", flush=True)
    with tempfile.TemporaryDirectory(prefix="flavours-bench-") as tmp:
        workdir = Path(tmp)
        proc, port = start_receiver(workdir, args)
        print(
            f"receiver: flavours serve --workers {args.workers} on {HOST}:{port}, landing in "
            f"{workdir / 'landing'}; load: {args.procs} processes, {args.concurrency} "
            f"{args.client} connections, {args.duration:g} s per phase ({os.cpu_count()} CPUs)",
            flush=True,
        )
        try:
            with multiprocessing.get_context("spawn").Pool(args.procs) as pool:
                pairs = []
                for i in range(1, args.repeat + 1):
                    trivial = run_phase(
                        f"GET /healthz #{i}",
                        pool,
                        proc,
                        port,
                        args.procs,
                        args.concurrency,
                        args,
                        None,
                    )
                    durable = run_phase(
                        f"POST customers (durable) #{i}",
                        pool,
                        proc,
                        port,
                        args.procs,
                        args.concurrency,
                        args,
                        template,
                    )
                    pairs.append((trivial, durable))
                steady = run_phase(
                    f"POST open loop {args.rate:g}/s",
                    pool,
                    proc,
                    port,
                    args.procs,
                    OPEN_LOOP_CONNECTIONS,
                    args,
                    template,
                    rate=args.rate,
                )
        finally:
            devtools.stop(proc)
        xids, lines, objects = landed(workdir / "landing")
    phases = [*(phase for pair in pairs for phase in pair), steady]
    acked = {xid for phase in phases for xid in phase.result.acked}
    print()
    print_report(pairs, steady, args)
    missing = acked - xids
    print(
        f"\nlanded: {lines:,} events in {objects:,} objects ({lines / max(objects, 1):.1f} per "
        f"object); acked: {len(acked):,}; acked but not landed: {len(missing)}"
    )
    late = steady.result.late_starts
    if late:
        print(f"open loop: {late} requests started more than 1 ms after they were due")
    if missing:
        print("FAILED: acked events are missing from the landing folder", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
