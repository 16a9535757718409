"""The receiver under faults: kill -9 of the whole server, a frozen S3 server, an unwritable folder.

Real components only: ``flavours serve`` (gunicorn master and workers), moto's S3 server in its
own process, a landing folder on disk. Senders behave like Flavours: they retry every event on a
connection error or a non-2xx answer until it is acknowledged, within a time bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from core.landing import LandingStore
from tests.conftest import S3Server, start_receiver, start_s3_server, stop_process, wait_until

LANDING_TIMEOUT_S = 2.0
ANSWER_BOUND_S = LANDING_TIMEOUT_S + 2.0
"""Every webhook must be answered within this, even while the landing store hangs."""


@dataclass(frozen=True)
class Attempt:
    """One POST by a sender: when it started and ended (monotonic) and its status or error."""

    xid: str
    started: float
    ended: float
    status: int | None
    error: str | None = None


class RetryingSenders:
    """Threads that post each xid until it is acked (2xx), retrying like Flavours does."""

    def __init__(
        self, url: Callable[[], str], xids: list[str], threads: int, deadline_s: float = 60
    ) -> None:
        self.url = url
        self.xids = xids
        self.deadline = time.monotonic() + deadline_s
        self.acked: set[str] = set()
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_all, args=(xids[i::threads],), daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        """Wait for every sender to finish; fail the test if one is still running."""
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(end - time.monotonic(), 0))
        assert not any(t.is_alive() for t in self._threads), "senders did not finish in time"

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def acked_now(self) -> set[str]:
        with self._lock:
            return set(self.acked)

    def _send_all(self, xids: list[str]) -> None:
        with requests.Session() as session:
            for xid in xids:
                self._send_until_acked(session, xid)

    def _send_until_acked(self, session: requests.Session, xid: str) -> None:
        event = {"xid": xid, "action": "customers.UPDATE", "data": {"id": f"c-{xid}"}}
        for _ in range(5000):
            if self._stop.is_set() or time.monotonic() > self.deadline:
                return
            started = time.monotonic()
            try:
                response = session.post(self.url(), json=event, timeout=10)
            except requests.RequestException as exc:
                self._record(Attempt(xid, started, time.monotonic(), None, type(exc).__name__))
                time.sleep(0.05)
                continue
            self._record(Attempt(xid, started, time.monotonic(), response.status_code))
            if response.ok:
                with self._lock:
                    self.acked.add(xid)
                return
            time.sleep(0.05)

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)


def landed_xids(url: str) -> list[str]:
    """The xid of every landed customer event; every line of every object must be whole JSON."""
    store = LandingStore(url)
    xids = []
    for obj in store.list_objects("customers"):
        data = store.read_object(obj.key)
        assert data.endswith(b"\n"), f"{obj.key} ends in a torn line"
        for line in data.splitlines():
            xids.append(json.loads(line)["payload"]["xid"])
    return xids


def unique_xids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def test_acked_events_survive_kill_9_of_the_whole_server_under_load(tmp_path, landing_dir):
    # TMPDIR keeps the metrics folder of the killed server inside tmp_path.
    env = {"TMPDIR": str(tmp_path)}
    first = start_receiver(tmp_path, str(landing_dir), extra_env=env)
    current = {"url": first.webhook_url()}
    xids = unique_xids("kill", 800)
    senders = RetryingSenders(lambda: current["url"], xids, threads=8)
    restarted = None
    try:
        senders.start()
        wait_until(lambda: len(senders.acked) >= 250, timeout=30, what="250 acked events")
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        time.sleep(0.2)  # answers read before the kill are recorded by now
        acked_before_kill = senders.acked_now()
        landed_after_kill = set(landed_xids(str(landing_dir)))

        restarted = start_receiver(tmp_path, str(landing_dir), extra_env=env)
        current["url"] = restarted.webhook_url()
        senders.join(timeout=60)
        landed_at_end = landed_xids(str(landing_dir))
    finally:
        senders.stop()
        stop_process(first.proc)
        if restarted:
            stop_process(restarted.proc)

    assert len(acked_before_kill) < len(xids), "the kill should happen while events are in flight"
    assert acked_before_kill <= landed_after_kill, "an acked event is missing after kill -9"
    assert any(a.status is None for a in senders.attempts), "senders should have seen the outage"
    assert senders.acked == set(xids)
    assert set(landed_at_end) == set(xids)


@pytest.fixture
def own_s3_server() -> Iterator[S3Server]:
    """A moto S3 server for this test alone, so freezing it does not affect other tests."""
    server = start_s3_server()
    try:
        yield server
    finally:
        # A stopped process cannot act on SIGTERM: let it run again before stopping it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGCONT)
        stop_process(server.proc)


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_frozen_s3_server_gives_bounded_503s_and_loses_no_acked_event(
    tmp_path, own_s3_server, monkeypatch
):
    for key, value in own_s3_server.env.items():
        monkeypatch.setenv(key, value)
    url = f"s3://{own_s3_server.new_bucket()}/flavours"
    receiver = start_receiver(
        tmp_path,
        url,
        extra_env={
            **own_s3_server.env,
            "FLAVOURS_LANDING_TIMEOUT_S": str(LANDING_TIMEOUT_S),
            "TMPDIR": str(tmp_path),
        },
    )
    moto_group = own_s3_server.proc.pid
    xids = unique_xids("frozen", 600)
    senders = RetryingSenders(receiver.webhook_url, xids, threads=8)
    probes_acked = []

    def probe_post(xid: str) -> requests.Response:
        response = requests.post(receiver.webhook_url(), json={"xid": xid}, timeout=15)
        if response.status_code == 202:
            probes_acked.append(xid)
        return response

    try:
        senders.start()
        wait_until(lambda: len(senders.acked) >= 100, timeout=30, what="100 acked events")
        os.killpg(moto_group, signal.SIGSTOP)
        frozen_at = time.monotonic()
        ready_frozen, ready_frozen_s = timed(
            lambda: requests.get(f"{receiver.url}/readyz", timeout=15)
        )
        post_frozen, post_frozen_s = timed(lambda: probe_post("probe-frozen"))
        # Stay frozen longer than botocore's read timeout, so the writer's own calls time out.
        time.sleep(max(0.0, frozen_at + 6 - time.monotonic()))
        acked_while_frozen = senders.acked_now()
        os.killpg(moto_group, signal.SIGCONT)
        thawed_at = time.monotonic()

        probe = iter(range(1000))
        wait_until(
            lambda: probe_post(f"probe-thawed-{next(probe)}").status_code == 202,
            timeout=30,
            interval=0.2,
            what="a 202 after the S3 server is back",
        )
        recovered_s = time.monotonic() - thawed_at
        ready_thawed = requests.get(f"{receiver.url}/readyz", timeout=15)
        senders.join(timeout=60)
        landed = landed_xids(url)
    finally:
        senders.stop()
        stop_process(receiver.proc)

    assert ready_frozen.status_code == 503
    assert ready_frozen.json()["status"] == "unavailable"
    assert ready_frozen_s < ANSWER_BOUND_S
    assert post_frozen.status_code == 503
    assert "retry" in post_frozen.json()["error"]
    assert post_frozen_s < ANSWER_BOUND_S

    slow = [a for a in senders.attempts if a.ended - a.started >= ANSWER_BOUND_S]
    failed = [a for a in senders.attempts if a.status is None]
    assert not slow, f"answers slower than {ANSWER_BOUND_S} s: {slow[:3]}"
    assert not failed, f"requests failed without an answer: {failed[:3]}"
    during_freeze = [a for a in senders.attempts if frozen_at < a.started and a.ended < thawed_at]
    assert len(during_freeze) >= 8
    assert {a.status for a in during_freeze} == {503}

    assert recovered_s < 20
    assert ready_thawed.status_code == 200
    assert acked_while_frozen <= set(landed), "an event acked before the freeze is missing"
    assert senders.acked == set(xids)
    assert set(xids) | set(probes_acked) <= set(landed)


def test_unwritable_landing_folder_answers_503_until_it_is_writable_again(tmp_path: Path):
    # A regular file where a parent folder should be: no user, root included, can write below.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    landing = blocker / "landing"
    receiver = start_receiver(tmp_path, str(landing))
    try:
        ready_blocked = requests.get(f"{receiver.url}/readyz", timeout=10)
        post_blocked = requests.post(receiver.webhook_url(), json={"xid": "blocked"}, timeout=10)

        blocker.unlink()
        landing.mkdir(parents=True)
        ready_again = requests.get(f"{receiver.url}/readyz", timeout=10)
        post_again = requests.post(receiver.webhook_url(), json={"xid": "again"}, timeout=10)
    finally:
        stop_process(receiver.proc)

    assert ready_blocked.status_code == 503
    assert ready_blocked.headers["Content-Type"] == "application/json"
    assert "not writable" in ready_blocked.json()["error"]
    assert post_blocked.status_code == 503
    assert post_blocked.json()["status"] == "error"
    assert "retry" in post_blocked.json()["error"]
    assert ready_again.status_code == 200
    assert post_again.status_code == 202
    assert landed_xids(str(landing)) == ["again"]
