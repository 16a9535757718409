"""dlt source over the landing store: landed JSON-lines objects as typed Arrow tables.

Objects are read whole (local folder or S3, gzip or not, through ``LandingStore``; a plain local
object is memory-mapped instead of copied), split into lines without copying (line offsets found
with ``find``), parsed column-wise by DuckDB (``sql/parse_landed_lines.sql``) and handed to dlt
as Arrow tables, a chunk of objects at a time. One parse feeds three tables:
``customer_events``, ``customer_events_rejected`` and ``delivery_errors``. Nothing here goes row
by row through Python dicts.
"""

from __future__ import annotations

import logging
import mmap
import queue
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files

import dlt
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.landing import LandedObject, LandingStore

log = logging.getLogger(__name__)


PAYLOAD_AS_JSON = {"payload": {"data_type": "json"}}
"""dlt column hint: store ``payload`` as DuckDB JSON, not the text Arrow carries."""
JSON_HINTED_RESOURCES = ("customer_events", "delivery_errors")


class _PayloadJsonHint(logging.Filter):
    """Drops dlt's warning that our ``payload`` json hint overrides Arrow's text type.

    That override is the point (DuckDB stores the payload as JSON). Only the warning about our
    two resources with that hint is dropped; every other dlt warning passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "several column hints were different" in message
            and any(f"resource: {name}," in message for name in JSON_HINTED_RESOURCES)
        )


logging.getLogger("dlt").addFilter(_PayloadJsonHint())

CUSTOMER_TOPICS = ("customers", "customers_snapshot")
"""Topics whose lines are customer events: the webhooks' and the backfill's snapshots."""
PARSE_SQL = files("pipelines").joinpath("sql/parse_landed_lines.sql").read_text()
CHUNK_BYTES = 64 * 1024 * 1024
"""Objects are parsed in chunks of about this many bytes, which bounds memory."""
READ_AHEAD_WORKERS = 2
"""Chunks read and parsed at once while dlt writes another (two keep both cores busy; peak
memory is set by the DuckDB insert, not by these chunks)."""

INVALID_UTF8_MARK = "<invalid UTF-8> "
LINES_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("landing_file", pa.string()),
        ("line_no", pa.int64()),
        ("line", pa.string()),
    ]
)
CUSTOMER_EVENT_COLUMNS = [
    "xid",
    "action",
    "event_ts",
    "customer_id",
    "payload",
    "received_at",
    "request_id",
    "landing_file",
    "line_no",
]
REJECTED_COLUMNS = ["topic", "landing_file", "line_no", "reject_reason", "line", "received_at"]
DELIVERY_ERROR_COLUMNS = [
    "code",
    "endpoint",
    "message",
    "received_at",
    "request_id",
    "payload",
    "landing_file",
    "line_no",
]


@dataclass
class ParsedChunk:
    """The three raw tables parsed from one chunk of landed objects."""

    customer_events: pa.Table
    customer_events_rejected: pa.Table
    delivery_errors: pa.Table


@dataclass
class LoadTally:
    """Per-object line counts gathered while a load runs, for the manifest and the summary."""

    lines: dict[str, int] = field(default_factory=dict)
    events: int = 0
    rejected: int = 0
    delivery_errors: int = 0


def split_lines(data: bytes | mmap.mmap) -> pa.Array:
    """The lines of an object as Arrow strings sharing the object's buffer (newline kept).

    Each value keeps its trailing newline (JSON ignores it; the parse SQL trims it for the
    rejected table), so no byte is copied. A last line without newline (torn) is kept too.
    """
    if not data:
        return pa.array([], pa.string())
    # Arrow string offsets are int32: chunks stay far below 2 GiB (CHUNK_BYTES).
    offsets = np.array(_line_offsets(data), dtype=np.int32)
    lines = pa.Array.from_buffers(
        pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        return lines.cast(pa.string())
    except pa.ArrowInvalid:
        # Invalid UTF-8 (corruption; the receiver writes only UTF-8): such a line is marked so
        # that it cannot parse as JSON and is rejected, with its text kept for inspection.
        return pa.array([_decoded(line) for line in lines.to_pylist()], pa.string())


def _line_offsets(data: bytes | mmap.mmap) -> list[int]:
    """Where each line starts, then ``len(data)``.

    ``bytes.find`` (memchr) per line is about ten times faster than comparing every byte with
    numpy.
    """
    offsets = [0]
    find = data.find
    newline = find(b"\n")
    while newline != -1:
        offsets.append(newline + 1)
        newline = find(b"\n", newline + 1)
    if offsets[-1] != len(data):
        offsets.append(len(data))  # a last line without newline (torn) is a line too
    return offsets


def _decoded(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID_UTF8_MARK + line.decode("utf-8", errors="replace")


def landed_lines_table(
    store: LandingStore, objects: Sequence[LandedObject]
) -> tuple[pa.Table, dict[str, int]]:
    """``(topic, landing_file, line_no, line)`` for every line of ``objects``, and how many lines
    each object has (0 for an empty one)."""
    pieces = []
    line_counts = {}
    contents = store.map_objects([obj.key for obj in objects])
    for obj, content in zip(objects, contents, strict=True):
        lines = split_lines(content)
        count = line_counts[obj.key] = len(lines)
        pieces.append(
            pa.table(
                {
                    "topic": pa.repeat(obj.topic, count),
                    "landing_file": pa.repeat(obj.key, count),
                    "line_no": pa.array(np.arange(1, count + 1, dtype=np.int64)),
                    "line": lines,
                },
                schema=LINES_SCHEMA,
            )
        )
    table = pa.concat_tables(pieces) if pieces else LINES_SCHEMA.empty_table()
    return table, line_counts


def parse_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection to run the parse SQL on (time zone UTC)."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    return con


def parse_lines(landed_lines: pa.Table, con: duckdb.DuckDBPyConnection) -> ParsedChunk:
    """Parse envelope lines with DuckDB, on ``con``, into the three raw tables."""
    con.register("landed_lines", landed_lines)
    try:
        parsed = con.sql(PARSE_SQL).to_arrow_table()
    finally:
        con.unregister("landed_lines")
    valid = pc.is_null(parsed["reject_reason"])
    is_customer = pc.is_in(parsed["topic"], pa.array(CUSTOMER_TOPICS))
    if pc.all(pc.and_(valid, is_customer)).as_py() is not False:
        # The usual chunk: customer events only, all valid; no filtering copy of the payloads.
        empty = parsed.slice(0, 0)
        return ParsedChunk(
            customer_events=parsed.select(CUSTOMER_EVENT_COLUMNS),
            customer_events_rejected=empty.select(REJECTED_COLUMNS),
            delivery_errors=empty.select(DELIVERY_ERROR_COLUMNS),
        )
    return ParsedChunk(
        customer_events=parsed.filter(pc.and_(valid, is_customer)).select(CUSTOMER_EVENT_COLUMNS),
        customer_events_rejected=parsed.filter(pc.invert(valid)).select(REJECTED_COLUMNS),
        delivery_errors=parsed.filter(pc.and_(valid, pc.equal(parsed["topic"], "errors"))).select(
            DELIVERY_ERROR_COLUMNS
        ),
    )


def chunk_objects(
    store: LandingStore, objects: Sequence[LandedObject], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[list[LandedObject]]:
    """Group objects into chunks of about ``chunk_bytes`` (sizes from the store's listing)."""
    chunk: list[LandedObject] = []
    size = 0
    for obj in objects:
        chunk.append(obj)
        size += obj.size
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


@dataclass
class ReadChunk:
    """One chunk of landed objects, read and parsed: the lines of each object, and the tables."""

    line_counts: dict[str, int]
    parsed: ParsedChunk


def read_and_parse(
    store: LandingStore, chunk: list[LandedObject], connections: queue.SimpleQueue
) -> ReadChunk:
    """Read one chunk of objects and parse its lines on a connection borrowed from
    ``connections`` (the lines themselves are not kept)."""
    lines, line_counts = landed_lines_table(store, chunk)
    con = connections.get()
    try:
        return ReadChunk(line_counts, parse_lines(lines, con))
    finally:
        connections.put(con)


def read_ahead(
    store: LandingStore,
    objects: Sequence[LandedObject],
    workers: int = READ_AHEAD_WORKERS,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[ReadChunk]:
    """Parsed chunks in order; the next ones are read and parsed in worker threads meanwhile.

    While dlt writes one chunk to parquet, the next are read and parsed by DuckDB: both release
    the GIL, so the two cores overlap them. At most ``workers + 1`` chunks are held at once:
    the one dlt is writing and one per worker, parsed or being parsed.

    A chunk is parsed on one of ``workers`` DuckDB connections, kept for the whole read: a new
    in-memory database per chunk would map and unmap its memory every time.
    """
    opened = [parse_connection() for _ in range(workers)]
    connections: queue.SimpleQueue = queue.SimpleQueue()
    for con in opened:
        connections.put(con)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flavours-parse") as pool:
            pending: deque[Future[ReadChunk]] = deque()
            for chunk in chunk_objects(store, objects, chunk_bytes):
                pending.append(pool.submit(read_and_parse, store, chunk, connections))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        for con in opened:
            con.close()


@dlt.source(name="flavours", max_table_nesting=0)
def flavours_landing(
    landing_url: str | None = None,
    objects: Sequence[LandedObject] = (),
    tally: LoadTally | None = None,
    compression: str = "none",
):
    """Landed Flavours webhooks: customer events, rejected lines and delivery errors."""
    tally = tally if tally is not None else LoadTally()

    @dlt.resource(name="landed_chunks", selected=False)
    def landed_chunks() -> Iterator[ParsedChunk]:
        """Parsed chunks of the given landed objects (feeds the three tables below)."""
        if not objects:
            # An empty chunk still creates the raw tables, so models can always read them.
            with parse_connection() as con:
                empty = parse_lines(LINES_SCHEMA.empty_table(), con)
            yield empty
            return
        store = LandingStore(landing_url or "", compression)
        for chunk in read_ahead(store, objects):
            parsed = chunk.parsed
            tally.lines.update(chunk.line_counts)
            tally.events += parsed.customer_events.num_rows
            tally.rejected += parsed.customer_events_rejected.num_rows
            tally.delivery_errors += parsed.delivery_errors.num_rows
            objects_in_chunk, lines = len(chunk.line_counts), sum(chunk.line_counts.values())
            log.info(
                f"parsed {objects_in_chunk:,} landed objects: {lines:,} lines, "
                f"{parsed.customer_events_rejected.num_rows:,} of them rejected",
                extra={"objects": objects_in_chunk, "lines": lines},
            )
            yield parsed

    @dlt.transformer(
        name="customer_events",
        write_disposition="append",
        columns=PAYLOAD_AS_JSON,
    )
    def customer_events(chunk: ParsedChunk) -> Iterator[pa.Table]:
        """One row per landed line that is a valid customer event; duplicates kept."""
        yield chunk.customer_events

    @dlt.transformer(name="customer_events_rejected", write_disposition="append")
    def customer_events_rejected(chunk: ParsedChunk) -> Iterator[pa.Table]:
        """Landed lines that are not valid events: raw line, file, line number and reason."""
        yield chunk.customer_events_rejected

    @dlt.transformer(
        name="delivery_errors",
        write_disposition="append",
        columns=PAYLOAD_AS_JSON,
    )
    def delivery_errors(chunk: ParsedChunk) -> Iterator[pa.Table]:
        """Flavours error-webhook notifications: code, endpoint, message."""
        yield chunk.delivery_errors

    chunks = landed_chunks()
    return (
        chunks | customer_events,
        chunks | customer_events_rejected,
        chunks | delivery_errors,
    )
