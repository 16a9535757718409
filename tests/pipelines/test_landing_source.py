"""The dlt source's reading side: chunks parsed ahead of dlt, in order; what a payload must be."""

from __future__ import annotations

import gzip
import logging
import mmap
import os
import resource
import threading

import duckdb
import pyarrow as pa
import pytest

from core.landing import (
    CORRUPT_GZIP_MARK,
    MAP_MIN_BYTES,
    READ_CONCURRENCY,
    LandingStore,
    gunzip_salvaging,
)
from pipelines import landing_source
from pipelines.landing_source import (
    LINES_SCHEMA,
    parse_connection,
    parse_lines,
    read_ahead,
    split_lines,
)
from tests.landing_helpers import customer_event, envelope, land


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_read_ahead_yields_every_chunk_once_in_listing_order(tmp_path, workers):
    store = LandingStore(str(tmp_path))
    for n in range(7):
        land(store, [envelope(customer_event(f"c-{n}", xid=f"x-{n}-{i}")) for i in range(n + 1)])
    objects = store.list_objects("customers")

    # chunk_bytes=1: every object is a chunk of its own, so several are parsed at once
    chunks = list(read_ahead(store, objects, workers=workers, chunk_bytes=1))

    assert [list(chunk.line_counts) for chunk in chunks] == [[obj.key] for obj in objects]
    for chunk, n in zip(chunks, range(7), strict=True):
        [(key, lines)] = chunk.line_counts.items()
        assert lines == n + 1
        events = chunk.parsed.customer_events
        assert set(events["landing_file"].to_pylist()) == {key}
        assert events["line_no"].to_pylist() == list(range(1, lines + 1))
    xids = [xid for chunk in chunks for xid in chunk.parsed.customer_events["xid"].to_pylist()]
    assert sorted(xids) == sorted(f"x-{n}-{i}" for n in range(7) for i in range(n + 1))


def test_parse_workers_reuse_their_connections_and_close_them(tmp_path, monkeypatch):
    store = LandingStore(str(tmp_path))
    for n in range(6):
        land(store, [envelope(customer_event(f"c-{n}", xid=f"x-{n}"))])
    opened = []

    def counted_connection():
        opened.append(parse_connection())
        return opened[-1]

    monkeypatch.setattr(landing_source, "parse_connection", counted_connection)

    chunks = list(read_ahead(store, store.list_objects("customers"), workers=2, chunk_bytes=1))

    assert len(chunks) == 6
    assert len(opened) == 2  # one per worker, not one per chunk
    for con in opened:
        with pytest.raises(duckdb.ConnectionException):
            con.execute("select 1")


@pytest.mark.parametrize(
    ("payload_json", "is_object"),
    [
        ('{"xid": "x", "action": "customers.create", "timestamp": 1, "data": {"id": "c"}}', True),
        ('  {  "xid" : "x" , "action":"customers.create","timestamp":1,"data":{"id":"c"} }', True),
        ("null", False),
        ('[{"xid": "x"}]', False),
        ('"{\\"xid\\": \\"x\\"}"', False),
        ("42", False),
        ("true", False),
        (None, False),
    ],
)
def test_only_an_object_payload_makes_a_customer_event(payload_json, is_object):
    payload = "" if payload_json is None else f', "payload": {payload_json}'
    line = f'{{"v": 1, "received_at": "2026-11-01T00:00:00Z", "request_id": "r"{payload}}}\n'
    lines = pa.table(
        {
            "topic": ["customers"],
            "landing_file": ["customers/f.jsonl"],
            "line_no": pa.array([1], pa.int64()),
            "line": [line],
        },
        schema=LINES_SCHEMA,
    )

    with parse_connection() as con:
        parsed = parse_lines(lines, con)

    assert parsed.customer_events.num_rows == int(is_object)
    if not is_object:
        [reason] = parsed.customer_events_rejected["reject_reason"].to_pylist()
        assert reason == "envelope has no payload object"


def test_large_plain_local_objects_are_mapped_and_split_like_the_bytes_read(tmp_path):
    plain = LandingStore(str(tmp_path / "plain"))
    gzipped = LandingStore(str(tmp_path / "gzip"), compression="gzip")
    line = envelope(customer_event("c-1"))
    lines = [line] * (MAP_MIN_BYTES // len(line) + 1)
    whole, gzip_key = land(plain, lines), land(gzipped, lines)
    contents = {
        "torn": b"".join(line + b"\n" for line in lines) + lines[0][:25],
        "empty": b"",
    }
    keys = {name: whole.replace(".jsonl", f"{n}.jsonl") for n, name in enumerate(contents)}
    for name, data in contents.items():
        (tmp_path / "plain" / keys[name]).write_bytes(data)

    assert isinstance(plain.map_object(whole), mmap.mmap)
    assert not isinstance(plain.map_object(land(plain, lines[:2])), mmap.mmap)
    assert split_lines(plain.map_object(whole)).to_pylist() == [
        (line + b"\n").decode() for line in lines
    ]
    assert len(split_lines(plain.map_object(keys["torn"]))) == len(lines) + 1
    assert plain.map_object(keys["empty"]) == b""
    for key in (whole, *keys.values()):
        assert split_lines(plain.map_object(key)).equals(split_lines(plain.read_object(key)))
    assert gzipped.map_object(gzip_key) == b"".join(line + b"\n" for line in lines)


def test_a_chunk_of_many_small_objects_holds_no_file_open_per_object(tmp_path):
    # At idle the receiver lands one small object per event, so one chunk can hold thousands
    # of them: mapping each would keep a file descriptor (and a mapping) per object alive.
    store = LandingStore(str(tmp_path))
    for n in range(300):
        land(store, [envelope(customer_event(f"c-{n}", xid=f"x-{n}"))])
    objects = store.list_objects("customers")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 100, hard))
    try:
        (chunk,) = read_ahead(store, objects, workers=1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert sorted(chunk.parsed.customer_events["xid"].to_pylist()) == sorted(
        f"x-{n}" for n in range(300)
    )


def test_objects_on_s3_come_back_whole_and_in_the_order_asked(s3_env):
    bucket = s3_env.new_bucket()
    plain = LandingStore(f"s3://{bucket}/plain")
    gzipped = LandingStore(f"s3://{bucket}/gzip", compression="gzip")
    lines = [envelope(customer_event(f"c-{n}")) for n in range(20)]
    keys = [land(plain, lines[:n]) for n in range(20)]  # the first one is empty
    gzip_keys = [land(gzipped, lines[: n + 1]) for n in range(3)]
    expected = [b"".join(line + b"\n" for line in lines[:n]) for n in range(20)]

    assert plain.map_objects(keys) == expected
    assert plain.map_objects(keys[::-1]) == expected[::-1]
    assert [plain.read_object(key) for key in keys] == expected
    assert gzipped.map_objects(gzip_keys) == expected[1:4]


def test_a_chunk_on_object_storage_is_fetched_concurrently(s3_env, monkeypatch):
    # Small objects cost one round trip each: fetched one by one, a chunk of idle traffic
    # (one object per event) waits for them in turn. Every fetch here waits until
    # READ_CONCURRENCY of them are in flight at once, so one-by-one fetching fails.
    bucket = s3_env.new_bucket()
    store = LandingStore(f"s3://{bucket}/landing")
    keys = [land(store, [envelope(customer_event(f"c-{n}"))]) for n in range(READ_CONCURRENCY)]
    all_in_flight = threading.Barrier(READ_CONCURRENCY, timeout=10)
    fetch = store.map_object

    def fetch_when_all_are_in_flight(key: str) -> bytes | mmap.mmap:
        all_in_flight.wait()
        return fetch(key)

    monkeypatch.setattr(store, "map_object", fetch_when_all_are_in_flight)
    assert [len(split_lines(data)) for data in store.map_objects(keys)] == [1] * len(keys)


def test_a_damaged_gzip_object_keeps_every_member_before_the_damage():
    first = b"".join(b'{"n": %d}\n' % n for n in range(5_000))
    second = b"".join(b'{"m": %d}\n' % n for n in range(5_000))
    members = gzip.compress(first) + gzip.compress(second)
    damaged = bytearray(members)
    damaged[len(gzip.compress(first)) + 40] ^= 0xFF  # inside the second member's data

    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append
    logger = logging.getLogger("core.landing")
    logger.addHandler(handler)
    try:
        assert gunzip_salvaging("intact.jsonl.gz", members) == first + second
        salvaged = gunzip_salvaging("damaged.jsonl.gz", bytes(damaged))
    finally:
        logger.removeHandler(handler)
    [warning] = warnings  # the intact object logs nothing
    assert "damaged.jsonl.gz is damaged gzip" in warning.getMessage()
    readable, marker = salvaged.rstrip(b"\n").rsplit(b"\n", 1)
    assert readable.startswith(first.rstrip(b"\n"))
    assert len(readable) < len(first + second)
    assert marker.startswith(CORRUPT_GZIP_MARK)
    assert gunzip_salvaging("not.jsonl.gz", b"plain text\n").startswith(CORRUPT_GZIP_MARK)
