"""Group commit: which lines share an object, and what a request is told when landing stalls."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from connector.batching import GroupCommitWriter, NotConfirmed
from core.landing import LandingStore
from tests.conftest import wait_until


class GatedStore(LandingStore):
    """A local store whose first write waits for ``gate``, so later lines queue up meanwhile."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = threading.Event()
        self.held = threading.Event()
        self.writes: list[int] = []

    def land_batch(self, key: str, lines: list[bytes]) -> None:
        if not self.held.is_set():
            self.held.set()
            self.gate.wait(10)
        self.writes.append(len(lines))
        super().land_batch(key, lines)


def land_concurrently(writer: GroupCommitWriter, store: GatedStore, count: int) -> list[str]:
    """Land one line, then ``count`` more while the first write is held at the gate."""
    with ThreadPoolExecutor(max_workers=count + 1) as pool:
        first = pool.submit(writer.land, "customers", b'{"n":0}', 10)
        assert store.held.wait(5), "the first write never started"
        rest = [pool.submit(writer.land, "customers", b'{"n":%d}' % i, 10) for i in range(count)]
        wait_until(lambda: writer._queue.qsize() == count, timeout=5, what="lines queued")
        store.gate.set()
        return [first.result(), *(future.result() for future in rest)]


def one_writer(store: GatedStore, **options) -> GroupCommitWriter:
    return GroupCommitWriter(store, "test", max_wait_ms=20, writers=1, **options)


def test_lines_queued_during_a_write_share_the_next_object(landing_dir):
    store = GatedStore(str(landing_dir))
    writer = one_writer(store, max_events=1000)

    keys = land_concurrently(writer, store, 6)

    assert store.writes == [1, 6]
    assert len(set(keys[1:])) == 1


def test_a_batch_closes_once_every_request_thread_waits_on_it(landing_dir):
    store = GatedStore(str(landing_dir))
    writer = one_writer(store, max_events=1000)
    writer.request_threads = 4

    land_concurrently(writer, store, 6)

    assert store.writes == [1, 4, 2]


def test_max_events_caps_a_batch(landing_dir):
    store = GatedStore(str(landing_dir))
    writer = one_writer(store, max_events=3)

    land_concurrently(writer, store, 7)

    assert store.writes == [1, 3, 3, 1]


def test_a_second_writer_lands_the_next_batch_while_the_first_waits(landing_dir):
    store = GatedStore(str(landing_dir))
    writer = GroupCommitWriter(store, "test", max_wait_ms=20, max_events=1000, writers=2)
    writer.request_threads = 8

    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(writer.land, "customers", b'{"n":0}', 10)
        assert store.held.wait(5), "the first write never started"
        # the first batch's line holds one of the 8 request threads: 7 more close the next one
        rest = [pool.submit(writer.land, "customers", b'{"n":%d}' % i, 10) for i in range(7)]
        keys = {future.result(timeout=10) for future in rest}
        assert not first.done(), "the first write is still held"
        store.gate.set()
        first_key = first.result(timeout=10)

    # all 7 landed while the first write was held (in one batch unless a thread came > 2 ms late)
    assert sum(store.writes[:-1]) == 7
    assert store.writes[-1] == 1
    assert first_key not in keys


def test_a_write_slower_than_the_timeout_is_not_confirmed(landing_dir):
    store = GatedStore(str(landing_dir))
    writer = GroupCommitWriter(store, "test", max_wait_ms=20, max_events=1000)

    with pytest.raises(NotConfirmed, match="did not confirm"):
        writer.land("customers", b'{"n":0}', timeout=0.2)
    store.gate.set()
    wait_until(lambda: store.writes == [1], timeout=5, what="the held write to finish")
    assert len(store.list_objects("customers")) == 1


def test_no_line_is_lost_when_a_workers_first_requests_start_its_writers(landing_dir):
    """The first requests of a fresh (or just forked) worker race to start its writers.

    A request that saw the writers as running while the queue was being replaced put its
    line into a queue nobody read; it was answered 503 after the landing timeout (seen in CI).
    """
    store = LandingStore(str(landing_dir))
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to hit the race
    try:
        unconfirmed = 0
        for _ in range(30):
            writer = GroupCommitWriter(store, "test", max_wait_ms=1, max_events=100)
            start = threading.Barrier(16)

            def land(n: int, writer=writer, start=start) -> bool:
                start.wait()
                try:
                    writer.land("customers", b'{"n":%d}' % n, timeout=1)
                except NotConfirmed:
                    return False
                return True

            with ThreadPoolExecutor(max_workers=16) as pool:
                unconfirmed += sum(not ok for ok in pool.map(land, range(16)))
    finally:
        sys.setswitchinterval(switch_interval)

    assert unconfirmed == 0
    landed = [line for obj in store.list_objects("customers") for line in store.iter_lines(obj.key)]
    assert len(landed) == 30 * 16


def test_flavours_serve_tells_each_workers_writer_its_thread_count(landing_dir, monkeypatch):
    from connector.server import _receiver_app
    from core import logs
    from core.settings import Settings

    # this runs in each gunicorn worker; here only its app matters, not its log handler.
    monkeypatch.setattr(logs, "configure_logging", lambda *args, **kwargs: None)
    settings = Settings(landing_url=str(landing_dir), webhook_token="t" * 24)

    app = _receiver_app(settings, threads=7)

    assert app.extensions["flavours_receiver"].writer.request_threads == 7
