"""Group commit: writer threads in each process make concurrent webhooks durable together.

Requests hand their envelope line to the writers and wait. One writer at a time gathers lines
for at most ``FLAVOURS_BATCH_MAX_WAIT_MS`` or ``FLAVOURS_BATCH_MAX_EVENTS``, and stops gathering
earlier once no line has come for ``QUIET_GAP_S`` or once every request thread is waiting; it
then writes one immutable object per topic in the batch, and only then releases every waiting
request. Lines that come while a batch is being written make up the next one, gathered and
written by the next writer meanwhile (``WRITER_THREADS``). Idle load gives one small object per
event; heavy load gives few large objects, and no request pays its own fsync or PUT.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

from connector import metrics
from core.landing import LandingError, LandingStore, new_writer_name

log = logging.getLogger(__name__)

QUEUE_LIMIT_BATCHES = 20
"""How many full batches may wait for the writer before new events are refused with 503."""

WRITER_THREADS = 2
"""Batches a process writes at once. While one batch waits for its fsync (or PUT), the next
gathers and is written: with a single writer every request thread of the worker sits idle
through every fsync."""

QUIET_GAP_S = 0.002
"""A batch is written as soon as no new line has come for this long. Waiting out the whole
``FLAVOURS_BATCH_MAX_WAIT_MS`` when nobody else is coming only adds latency, and it caps a
worker at (threads / max wait) events per second when every thread waits on the batch."""


class WriterBusy(LandingError):
    """Too many events are already waiting for the landing store."""


class NotConfirmed(LandingError):
    """The line's batch was not durable in time; it may still land (the sender retries)."""


class _Pending:
    """One line waiting for its batch; a plain lock is the cheapest way to wake its request."""

    __slots__ = ("_done", "error", "key", "line", "topic")

    def __init__(self, topic: str, line: bytes) -> None:
        self.topic = topic
        self.line = line
        self.key: str | None = None
        self.error: LandingError | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def resolve(self, key: str | None = None, error: LandingError | None = None) -> None:
        self.key, self.error = key, error
        self._done.release()

    def wait(self, timeout: float) -> str:
        if not self._done.acquire(timeout=timeout):
            raise NotConfirmed(f"landing store did not confirm within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.key is not None
        return self.key


class GroupCommitWriter:
    """Lands lines durably in batches; ``land`` returns once the line's batch is durable."""

    def __init__(
        self,
        store: LandingStore,
        instance_id: str,
        max_wait_ms: float,
        max_events: int,
        writers: int = WRITER_THREADS,
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.max_wait_s = max_wait_ms / 1000
        self.max_events = max_events
        self.queue_limit = max_events * QUEUE_LIMIT_BATCHES
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self.writers = writers
        self._lock = threading.Lock()
        self._gathering = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._owner_pid: int | None = None
        self._writer_name = ""
        self._seq = itertools.count(1)
        self._in_flight = 0
        """Lines in batches being written: their request threads cannot add another line."""
        self.request_threads: int | None = None
        """How many threads can call ``land`` (the server's threads per worker), when known.

        Each waits for its own line, so once every thread not already waiting on a batch being
        written has a line in the gathering batch, it is closed at once: nobody is left who
        could add one, and waiting out the quiet gap would only idle the CPU.
        """

    def land(self, topic: str, line: bytes, timeout: float) -> str:
        """Land one line for ``topic``; the object key once its batch is durable.

        Raises ``LandingError`` when the batch failed, ``NotConfirmed`` when it was not durable
        within ``timeout`` seconds (the line may still land later: the sender retries, and the
        pipeline drops the duplicate), and ``WriterBusy`` when too many lines already wait.
        """
        self._ensure_running()
        if self._queue.qsize() >= self.queue_limit:
            raise WriterBusy("too many events are waiting for the landing store")
        pending = _Pending(topic, line)
        self._queue.put(pending)
        return pending.wait(timeout)

    def _ensure_running(self) -> None:
        # Threads do not survive fork: a gunicorn worker starts its own writers on first use.
        # The fast path must not pass before the queue and threads of this process exist, so
        # ``_owner_pid`` is published last: a request that saw it set puts its line into the
        # queue the writers read, never into one about to be replaced.
        pid = os.getpid()
        if self._owner_pid == pid and all(t.is_alive() for t in self._threads):
            return
        with self._lock:
            if self._owner_pid != pid:
                # A fork may have copied locks held by the parent's threads: start afresh.
                self._writer_name = new_writer_name(self.instance_id)
                self._threads = []
                self._queue = queue.SimpleQueue()
                self._gathering = threading.Lock()
                self._in_flight = 0
            threads = [t for t in self._threads if t.is_alive()]
            while len(threads) < self.writers:
                thread = threading.Thread(
                    target=self._run, name="flavours-landing-writer", daemon=True
                )
                thread.start()
                threads.append(thread)
            self._threads = threads
            self._owner_pid = pid

    def _gather(self) -> list[_Pending]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self._gather_limit():
            wait = min(deadline - time.monotonic(), QUIET_GAP_S)
            try:
                # Past the deadline, still take what is already queued, without waiting.
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
        return batch

    def _gather_limit(self) -> int:
        if self.request_threads is None:
            return self.max_events
        return min(self.max_events, max(self.request_threads - self._in_flight, 1))

    def _run(self) -> None:
        while True:
            # One writer gathers at a time, the others write what they gathered before.
            with self._gathering:
                batch = self._gather()
                with self._lock:
                    self._in_flight += len(batch)
            try:
                self._land(batch)
            finally:
                with self._lock:
                    self._in_flight -= len(batch)

    def _land(self, batch: list[_Pending]) -> None:
        by_topic: dict[str, list[_Pending]] = defaultdict(list)
        for pending in batch:
            by_topic[pending.topic].append(pending)
        batch_time = datetime.now(UTC)
        for topic, items in by_topic.items():
            key = self.store.object_key(topic, batch_time, self._writer_name, next(self._seq))
            started = time.perf_counter()
            try:
                self.store.land_batch(key, [item.line for item in items])
            except Exception as exc:
                metrics.LANDING_FAILURES.inc()
                log.error(
                    "landing failed", extra={"object_key": key, "events": len(items), "err": exc}
                )
                error = exc if isinstance(exc, LandingError) else LandingError(str(exc))
                for item in items:
                    item.resolve(error=error)
                continue
            metrics.BATCH_EVENTS.observe(len(items))
            metrics.BATCH_WRITE_SECONDS.observe(time.perf_counter() - started)
            metrics.LANDED_EVENTS.labels(topic=topic).inc(len(items))
            for item in items:
                item.resolve(key)
