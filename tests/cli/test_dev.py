"""`flavours dev` (make serve): receiver and `dagster dev` together, one Ctrl-C stops both."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from connector.devtools import STOP_TIMEOUT_S
from tests.conftest import VENV_BIN, free_port, stop_process, wait_until


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


def ignore_sigint() -> None:
    """As a process started with ``&`` from a non-interactive shell begins."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop_signal", "preexec_fn"),
    [(signal.SIGINT, None), (signal.SIGINT, ignore_sigint), (signal.SIGTERM, None)],
    ids=["ctrl-c", "ctrl-c-after-starting-with-sigint-ignored", "sigterm"],
)
def test_one_signal_stops_receiver_and_dagster_dev(tmp_path, stop_signal, preexec_fn):
    receiver_port, dagster_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "FLAVOURS_WEBHOOK_TOKEN"},
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "FLAVOURS_LANDING_URL": str(tmp_path / "landing"),
        "FLAVOURS_WAREHOUSE": str(tmp_path / "warehouse.sqlite"),
        "FLAVOURS_DLT_DIR": str(tmp_path / "dlt"),
    }
    dev = subprocess.Popen(
        [
            str(VENV_BIN / "flavours"),
            "dev",
            "--port",
            str(receiver_port),
            "--dagster-port",
            str(dagster_port),
        ],
        env=env,
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
        started = descendants(dev.pid)
        assert len(started) >= 4, "receiver, its worker, dagster dev and its webserver"

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
