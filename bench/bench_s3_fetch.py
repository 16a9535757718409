"""Benchmark (``make bench-s3``): reading many small landed objects from S3.

At idle the receiver lands one object per event, and a small object costs one round trip
whatever its size. This lands ``--objects`` one-event objects in moto's S3 server on loopback
and reads them back through a proxy that delays every chunk of bytes by ``--delay-ms`` each
way (a round trip to a real object store; ``tc netem`` is not available on every machine).
In one run, on the same objects:

1. one by one, as the loader read them before: ``LandingStore.map_object`` per key (baseline);
2. as the loader reads a chunk now: ``LandingStore.map_objects``, up to ``READ_CONCURRENCY``
   at once;
3. the whole ``flavours load`` of those objects, in process, through the same proxy.

Not a DESIGN target: the figures back the README's description of loading from S3. moto
answers from Python on the same cores, so with no delay it is the limit, not the network.
Everything started here is stopped here, also on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_load import generate  # noqa: E402
from cli import devtools  # noqa: E402
from core.landing import READ_CONCURRENCY, LandingStore  # noqa: E402
from tests.s3_server import start_s3_server  # noqa: E402


class DelayProxy:
    """A TCP proxy on loopback that holds every chunk of bytes ``delay_s`` before passing it
    on, in both directions. It runs its own event loop in a thread until ``close``."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port, self.delay_s = target_port, delay_s
        self.port = devtools.free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="delay-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the delay proxy did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connect, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    async def _connect(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="added each way")
    args = parser.parse_args()
    # a SIGTERM unwinds through the finally below, which stops moto and the proxy
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{Path(__file__).name}: terminated"))

    work = Path(tempfile.mkdtemp(prefix="flavours-bench-s3-"))
    s3 = start_s3_server()
    proxy = None
    try:
        os.environ.update(s3.env)
        url = f"s3://{s3.new_bucket()}/flavours"
        generate(url, args.objects, args.objects, args.objects, seed=1)

        proxy = DelayProxy(s3.port, args.delay_ms / 1000)
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
        store = LandingStore(url)
        keys = [obj.key for obj in store.list_objects("customers")]
        assert len(keys) == args.objects, len(keys)
        store.map_object(keys[0])  # the client's first connection is not part of either
        one_by_one_s, one_by_one = timed(lambda: [store.map_object(key) for key in keys])
        together_s, together = timed(lambda: store.map_objects(keys))
        assert together == one_by_one

        from core.settings import Settings
        from pipelines.run import run_load

        settings = Settings(
            landing_url=url,
            warehouse=str(work / "w.sqlite"),
            dlt_dir=str(work / "dlt"),
            log_level=os.environ.get("FLAVOURS_LOG_LEVEL", "WARNING"),
        )
        load_s, (_, summary) = timed(lambda: run_load(settings))
        assert summary.raw_events == args.objects, summary

        per = 1000 / args.objects
        print(
            f"\n{args.objects:,} one-event objects on moto's S3 server, "
            f"{args.delay_ms:g} ms added each way, {os.cpu_count()} cores"
        )
        rows = [
            ("one by one (map_object)", one_by_one_s, ""),
            (
                f"{READ_CONCURRENCY} at a time (map_objects)",
                together_s,
                f"  ({one_by_one_s / together_s:.1f}x faster)",
            ),
        ]
        for label, seconds, note in rows:
            print(f"  {label:34s} {seconds:6.2f} s  {seconds * per:6.2f} ms/object{note}")
        print(f"  {'flavours load of them, in process':34s} {load_s:6.2f} s")
    finally:
        if proxy is not None:
            proxy.close()
        devtools.stop(s3.proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
