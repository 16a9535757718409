"""An HTTP proxy on loopback in front of moto's S3 server that answers like a throttled or
failing S3: ``503 SlowDown`` to chosen object GETs, as S3 does when a prefix gets more requests
than it serves. Everything else is passed through to moto unchanged."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>faults</RequestId></Error>"
)


class FaultyS3Proxy:
    """Forwards S3 requests to ``target_port`` on loopback, one connection per request.

    ``throttle_gets(n)``: the first ``n`` GETs of each object are answered ``503 SlowDown``.
    ``fail_gets_of(suffix)``: every GET of an object whose key ends with ``suffix`` is, until
    ``heal()``. ``object_gets`` counts the GETs of each object path, answered or not.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.object_gets: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._throttled_gets = 0
        self._failing_suffix: str | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers a PUT's "Expect: 100-continue"

            def do_GET(self) -> None:
                proxy._handle(self)

            do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faulty-s3", daemon=True
        )
        self._thread.start()

    def throttle_gets(self, first_n: int) -> None:
        self._throttled_gets = first_n

    def fail_gets_of(self, suffix: str) -> None:
        self._failing_suffix = suffix

    def heal(self) -> None:
        self._throttled_gets, self._failing_suffix = 0, None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        # an object GET has a key after the bucket and no query (a listing is GET /bucket?...)
        if request.command == "GET" and not url.query and url.path.count("/") >= 2:
            path = unquote(url.path)
            with self._lock:
                self.object_gets[path] += 1
                attempt = self.object_gets[path]
            failing = self._failing_suffix is not None and path.endswith(self._failing_suffix)
            if failing or attempt <= self._throttled_gets:
                self._answer(request, 503, {"Content-Type": "application/xml"}, SLOW_DOWN)
                return
        upstream = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "expect"}
            upstream.request(request.command, request.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            passed = {
                key: value
                for key, value in response.getheaders()
                if key.lower() not in {"transfer-encoding", "connection", "content-length"}
            }
            self._answer(request, response.status, passed, payload)
        finally:
            upstream.close()

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Connection", "close")
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)
        request.close_connection = True
