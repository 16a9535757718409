"""`flavours dev` (make serve): receiver, `dagster dev` and the dashboard together; one Ctrl-C
stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from cli.devtools import STOP_TIMEOUT_S
from core.settings import Settings
from tests.conftest import TOKEN, VENV_BIN, free_port, stop_process, wait_until
from tests.landing_helpers import customer_event
from tests.pipelines.test_readers import reader_process
from warehouse import connect_reader


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; only its parent has not reaped it yet
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def kill_process_groups(pids: set[int]) -> None:
    """SIGKILL the process group of each of ``pids`` still alive (``flavours dev`` starts each
    child in its own group)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def dev_command(receiver_port: int, dagster_port: int, dashboard_port: int = 0) -> list[str]:
    ports = ["--port", str(receiver_port), "--dagster-port", str(dagster_port)]
    return [str(VENV_BIN / "flavours"), "dev", *ports, "--dashboard-port", str(dashboard_port)]


def dev_environment(tmp_path: Path) -> dict[str, str]:
    """Everything ``flavours dev`` keeps under ``tmp_path``; no token, so it generates one."""
    return {
        **{k: v for k, v in os.environ.items() if k != "FLAVOURS_WEBHOOK_TOKEN"},
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "FLAVOURS_LANDING_URL": str(tmp_path / "landing"),
        "FLAVOURS_WAREHOUSE": str(tmp_path / "warehouse.sqlite"),
        "FLAVOURS_DLT_DIR": str(tmp_path / "dlt"),
    }


def ignore_sigint() -> None:
    """As a process started with ``&`` from a non-interactive shell begins."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop_signal", "preexec_fn"),
    [(signal.SIGINT, None), (signal.SIGINT, ignore_sigint), (signal.SIGTERM, None)],
    ids=["ctrl-c", "ctrl-c-after-starting-with-sigint-ignored", "sigterm"],
)
def test_one_signal_stops_receiver_dagster_dev_and_dashboard(tmp_path, stop_signal, preexec_fn):
    receiver_port, dagster_port, dashboard_port = free_port(), free_port(), free_port()
    dev = subprocess.Popen(
        dev_command(receiver_port, dagster_port, dashboard_port),
        env=dev_environment(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=preexec_fn,
        text=True,
    )
    started: set[int] = set()
    try:
        wait_until(
            lambda: answers(f"http://127.0.0.1:{receiver_port}/healthz"),
            timeout=60,
            what="receiver",
        )
        wait_until(
            lambda: answers(f"http://127.0.0.1:{dagster_port}/server_info"),
            timeout=120,
            what="dagster webserver",
        )
        wait_until(
            lambda: answers(f"http://127.0.0.1:{dashboard_port}/healthz"),
            timeout=60,
            what="dashboard",
        )
        started = descendants(dev.pid)
        assert len(started) >= 6, "receiver, dagster dev, dashboard and their workers"

        # Without FLAVOURS_WEBHOOK_TOKEN a token is generated and the URL printed: not open.
        url = dev.stdout.readline().split("webhooks: ", 1)[1].strip()
        assert "?token=" in url
        assert requests.post(url.split("?")[0], json={}, timeout=5).status_code == 401
        assert requests.post(url, json={"xid": "x"}, timeout=5).status_code == 202

        interrupted = time.monotonic()
        dev.send_signal(stop_signal)
        dev.wait(timeout=60)
        # Both children stopped on SIGTERM: nobody waited for the SIGKILL escalation.
        assert time.monotonic() - interrupted < STOP_TIMEOUT_S
        wait_until(
            lambda: not any(alive(pid) for pid in started), timeout=30, what="every child to exit"
        )
    finally:
        # when the behaviour under test breaks, its children must not outlive the test
        leftovers = started | (descendants(dev.pid) if dev.poll() is None else set())
        stop_process(dev)
        kill_process_groups(leftovers)
    assert not answers(f"http://127.0.0.1:{receiver_port}/healthz")
    assert not answers(f"http://127.0.0.1:{dashboard_port}/healthz")


def dagster_runs(dagster_url: str) -> list[dict]:
    """Every run ``dagster dev`` knows, from its GraphQL API: id, status, what started it."""
    query = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
    answer = requests.post(f"{dagster_url}/graphql", json={"query": query}, timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]["runsOrError"]["results"]


@pytest.mark.slow
def test_a_reader_and_the_sensors_runs_under_dagster_dev(tmp_path):
    receiver_port, dagster_port = free_port(), free_port()
    settings = Settings(
        landing_url=str(tmp_path / "landing"), warehouse=str(tmp_path / "warehouse.sqlite")
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "FLAVOURS_WEBHOOK_TOKEN": TOKEN,
        "FLAVOURS_LANDING_URL": settings.landing_url,
        "FLAVOURS_WAREHOUSE": settings.warehouse,
        "FLAVOURS_DLT_DIR": str(tmp_path / "dlt"),
        "FLAVOURS_SENSOR_INTERVAL_S": "5",
    }
    dev = subprocess.Popen(
        dev_command(receiver_port, dagster_port),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "dev.log").open("w"),
        start_new_session=True,
    )
    webhook = f"http://127.0.0.1:{receiver_port}/webhooks/flavours/customers?token={TOKEN}"
    dagster_url = f"http://127.0.0.1:{dagster_port}"
    started: set[int] = set()

    def send(prefix: str, count: int) -> None:
        for i in range(count):
            event = customer_event(f"{prefix}-{i}", ts_ms=1_700_000_000_000 + i)
            assert requests.post(webhook, json=event, timeout=10).status_code == 202

    def customers_seen() -> int | None:
        try:
            with connect_reader(settings) as con:
                return con.sql("select count(*) from analytics.dim_customer_current").fetchone()[0]
        except Exception:  # no warehouse, or no models yet
            return None

    try:
        wait_until(lambda: answers(f"{dagster_url}/server_info"), timeout=120, what="dagster")
        started = descendants(dev.pid)
        send("first", 20)
        wait_until(lambda: customers_seen() == 20, timeout=180, interval=1, what="a sensor run")

        with reader_process(settings, tmp_path) as reader:
            send("second", 15)
            wait_until(lambda: customers_seen() == 35, timeout=180, interval=1, what="a 2nd run")
            wait_until(lambda: (35,) * 5 in reader.answers("new"), timeout=60, what="the reader")
        # objects land one by one, so the sensor may have started more runs: let them end
        finished = {"SUCCESS", "FAILURE", "CANCELED"}
        wait_until(
            lambda: {run["status"] for run in dagster_runs(dagster_url)} <= finished,
            timeout=120,
            interval=1,
            what="every run to end",
        )
        runs = dagster_runs(dagster_url)
    finally:
        leftovers = started | (descendants(dev.pid) if dev.poll() is None else set())
        stop_process(dev)
        kill_process_groups(leftovers)

    assert reader.errors() == []
    assert set(reader.answers("held")) == {(20,) * 5}
    sensor_runs = [
        run
        for run in runs
        if {"key": "dagster/sensor_name", "value": "new_landed_objects"} in run["tags"]
    ]
    assert len(sensor_runs) >= 2
    assert {run["status"] for run in runs} == {"SUCCESS"}, runs


@pytest.mark.slow
def test_a_child_that_dies_stops_the_others_and_fails_dev(tmp_path):
    receiver_port, dagster_port = free_port(), free_port()
    dev = subprocess.Popen(
        dev_command(receiver_port, dagster_port),
        env=dev_environment(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    started: set[int] = set()
    try:
        wait_until(
            lambda: answers(f"http://127.0.0.1:{receiver_port}/healthz"),
            timeout=60,
            what="receiver",
        )
        started = descendants(dev.pid)
        children = Path(f"/proc/{dev.pid}/task/{dev.pid}/children").read_text().split()
        [receiver] = [
            int(pid) for pid in children if b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(receiver, signal.SIGKILL)
        output, _ = dev.communicate(timeout=60)
    finally:
        leftovers = started | (descendants(dev.pid) if dev.poll() is None else set())
        stop_process(dev)
        kill_process_groups(leftovers)

    assert dev.returncode == 1
    assert "flavours serve exited with code -9; stopping the others" in output
    wait_until(lambda: not any(alive(pid) for pid in started), timeout=30, what="the others")
