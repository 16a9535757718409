"""The landing store: immutable JSON-lines objects, written durably, listed and read back.

This is the only module that knows about fsspec paths. ``FLAVOURS_LANDING_URL`` is a local
folder or any fsspec URL (``s3://bucket/prefix``; endpoint and credentials come from the
standard ``AWS_*`` variables, e.g. ``AWS_ENDPOINT_URL`` for MinIO or moto).

Layout: ``<topic>/dt=YYYY-MM-DD/<YYYYMMDDTHHMMSSffffffZ>-<instance>-<seq>.jsonl[.gz]``.
An object appears whole or not at all: on local disk it is written under a hidden temporary
name, fsync'd, renamed into place and the folder fsync'd; on object storage it is one PUT.
"""

from __future__ import annotations

import gzip
import logging
import mmap
import os
import posixpath
import re
import secrets
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import fsspec
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)

REJECTED_PREFIX = "_rejected"
"""Where authenticated bodies that are not JSON objects are kept, with their reason."""

OBJECT_NAME = re.compile(r"^\d{8}T\d{12}Z-[A-Za-z0-9._]+-\d+\.jsonl(\.gz)?$")

CORRUPT_GZIP_MARK = b"<corrupt gzip> "
"""Starts the line that the loader reads after the readable part of a damaged gzip object."""
SALVAGE_STEP = 64 * 1024
"""Compressed bytes fed at a time when salvaging a damaged gzip object (what decompressed
before the damage is kept, up to this granularity)."""

MAP_MIN_BYTES = 1024 * 1024
"""Plain local objects at least this large are memory-mapped when loaded, smaller ones read
(a chunk of the loader, ~64 MB, then holds at most a few dozen mappings)."""

READ_CONCURRENCY = 16
"""Objects fetched at once from object storage when the loader reads a chunk. A small object
costs one round trip whatever its size, and at idle the receiver lands one object per event."""

# Bounds for object storage calls, so that a store that stops answering turns into an error
# (and a 503 to Flavours) instead of a request that hangs.
S3_TIMEOUTS = {"connect_timeout": 3, "read_timeout": 5, "retries": {"max_attempts": 2}}


class LandingError(RuntimeError):
    """The landing store could not make a batch durable, or could not read a landed object."""


@dataclass(frozen=True)
class LandedObject:
    """One landed object: its key relative to the landing root, and its topic."""

    key: str
    topic: str
    size: int = 0


class LandingStore:
    """Writes batches durably and lists and reads landed objects under one root URL."""

    def __init__(self, url: str, compression: str = "none") -> None:
        self.url = url
        self.compression = compression
        storage_options = {}
        if url.startswith(("s3://", "s3a://")):
            storage_options = {"config_kwargs": S3_TIMEOUTS, "skip_instance_cache": True}
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)

    # -- writing -------------------------------------------------------------------------------

    def object_key(self, topic: str, batch_time: datetime, writer: str, seq: int) -> str:
        """The documented key of a batch written by ``writer`` at ``batch_time``."""
        stamp = batch_time.astimezone(UTC)
        suffix = ".jsonl.gz" if self.compression == "gzip" else ".jsonl"
        return f"{topic}/dt={stamp:%Y-%m-%d}/{stamp:%Y%m%dT%H%M%S%fZ}-{writer}-{seq:08d}{suffix}"

    def land_batch(self, key: str, lines: list[bytes]) -> None:
        """Write ``lines`` (each without newline) as one immutable object at ``key``, durably."""
        data = b"".join(line + b"\n" for line in lines)
        if self.compression == "gzip":
            data = gzip.compress(data, compresslevel=5, mtime=0)
        path = self._path(key)
        try:
            if self.is_local:
                _write_local_durably(path, data)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:
            raise LandingError(f"could not land {key}: {exc}") from exc

    def check_writable(self) -> None:
        """Raise ``LandingError`` unless an object can be written and removed at the root."""
        probe = f"_readyz/{secrets.token_hex(8)}"
        try:
            if self.is_local:
                _write_local_durably(self._path(probe), b"ok\n")
            else:
                self.fs.pipe_file(self._path(probe), b"ok\n")
            self.fs.rm_file(self._path(probe))
        except Exception as exc:
            raise LandingError(f"landing store {self.url} is not writable: {exc}") from exc

    # -- reading -------------------------------------------------------------------------------

    def list_objects(self, topic: str) -> list[LandedObject]:
        """Every landed object of ``topic``, sorted by key; temporary files are never listed."""
        base = self._path(topic)
        try:
            entries = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        found = []
        for path, info in entries.items():
            if OBJECT_NAME.match(posixpath.basename(path)):
                found.append(LandedObject(self._key(path), topic, int(info.get("size") or 0)))
        return sorted(found, key=lambda obj: obj.key)

    def read_object(self, key: str) -> bytes:
        """The uncompressed bytes of one landed object (on object storage: one GET).

        Strict, for tools and tests: a damaged gzip object raises. The loader reads through
        ``map_object``, which salvages such an object instead.
        """
        data = self._fetch(key)
        return gzip.decompress(data) if key.endswith(".gz") else data

    def map_object(self, key: str) -> bytes | mmap.mmap:
        """The uncompressed bytes of one landed object, without copying them where it pays.

        A plain object of at least ``MAP_MIN_BYTES`` in a local folder is memory-mapped
        read-only: the loader reads it in place instead of copying it out of the page cache
        (less system CPU; docs/benchmarks.md). That is safe because landed objects
        are never modified. Smaller objects are read: each mapping keeps a file descriptor
        open until it is freed, and at idle the receiver lands one small object per event, so
        a chunk can hold thousands. Any other object (gzip, object storage) is read too.

        A damaged gzip object does not stop the load: see ``gunzip_salvaging``.
        """
        if not self.is_local or key.endswith(".gz"):
            data = self._fetch(key)
            return gunzip_salvaging(key, data) if key.endswith(".gz") else data
        with open(self._path(key), "rb") as handle:
            if os.fstat(handle.fileno()).st_size < MAP_MIN_BYTES:
                return handle.read()
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def map_objects(self, keys: Sequence[str]) -> list[bytes | mmap.mmap]:
        """``map_object`` of each key, in order. From object storage, up to
        ``READ_CONCURRENCY`` objects are fetched at once: one after the other, a chunk of small
        objects would wait for one round trip per object (``make bench-s3`` measures it)."""
        if self.is_local or len(keys) < 2:
            return [self.map_object(key) for key in keys]
        workers = min(READ_CONCURRENCY, len(keys))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flavours-fetch") as pool:
            return list(pool.map(self.map_object, keys))

    def _fetch(self, key: str) -> bytes:
        """The stored bytes of one landed object, or ``LandingError`` naming it.

        On object storage this is one GET. While the store answers ``503 SlowDown`` or times
        out, botocore and s3fs retry it with backoff (against moto: 15 attempts over ~11 s)
        before the error is raised.
        """
        try:
            return self.fs.cat_file(self._path(key))
        except OSError as exc:
            raise LandingError(
                f"could not read landed object {key} from {self.url}: {exc}"
            ) from exc

    def iter_lines(self, key: str) -> Iterator[bytes]:
        """The lines of one landed object, without newlines (for tests and tools)."""
        yield from self.read_object(key).splitlines()

    # -- paths ---------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _key(self, path: str) -> str:
        path = path.replace(os.sep, "/") if self.is_local else path
        root = self.root.replace(os.sep, "/") if self.is_local else self.root
        return path[len(root) + 1 :] if root and path.startswith(root + "/") else path


def gunzip_salvaging(key: str, data: bytes) -> bytes:
    """The decompressed bytes of the gzip object ``key``, even when it is damaged.

    Objects are written whole, so only damage (a disk, a copy tool) makes a corrupt one. Its
    readable part is kept, and one line starting with ``CORRUPT_GZIP_MARK`` says what went
    wrong. The loader loads the lines before the damage, rejects the rest with that line, and
    records the object as loaded: a damaged object must not fail every load after it. The
    object itself stays in the landing store as it is.
    """
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        error = str(exc) or type(exc).__name__
    readable = _readable_prefix(data)
    log.warning(
        f"landed object {key} is damaged gzip ({error}): loading the {len(readable):,} bytes "
        "that decompress, rejecting the rest (see raw.customer_events_rejected)",
        extra={"key": key, "error": error, "readable_bytes": len(readable)},
    )
    separator = b"\n" if readable and not readable.endswith(b"\n") else b""
    note = f"{error}; the {len(readable):,} bytes before this line decompressed"
    return readable + separator + CORRUPT_GZIP_MARK + note.encode() + b"\n"


def _readable_prefix(data: bytes) -> bytes:
    """What decompresses of a damaged gzip stream, member after member, up to the damage."""
    out = []
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        fed = 0
        while fed < len(rest) and not inflater.eof:
            try:
                out.append(inflater.decompress(rest[fed : fed + SALVAGE_STEP]))
            except zlib.error:
                return b"".join(out)
            fed += SALVAGE_STEP
        if not inflater.eof:  # truncated: what the last piece gave is all there is
            return b"".join(out)
        rest = inflater.unused_data + rest[fed:]
    return b"".join(out)


def new_writer_name(instance_id: str) -> str:
    """A name unique to one writer process: instance, process id and a random suffix."""
    return f"{instance_id}.{os.getpid()}{secrets.token_hex(2)}"


def _write_local_durably(path: str, data: bytes) -> None:
    """Temporary name, fsync, rename into place, fsync the folder: the object appears whole."""
    folder = os.path.dirname(path)
    _make_folder_durably(folder)
    # The key is unique to its writer, so its temporary name is too.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    # link() fails instead of replacing, so a name collision can never overwrite a landed object.
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _make_folder_durably(folder: str) -> None:
    """Create ``folder`` and fsync each parent that gained an entry, so the folder survives."""
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(folder)
    if parent and parent != folder:
        _make_folder_durably(parent)
    try:
        os.mkdir(folder)
    except FileExistsError:
        return
    dir_fd = os.open(parent or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
