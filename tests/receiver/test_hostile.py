"""Malformed and hostile requests against a real gunicorn receiver, sent as raw bytes.

Each case is sent over a raw socket, so nothing normalises it on the way (no client fixes the
path, the headers or the framing). For every case, authenticated and not:

- the answer is never a 5xx. Where gunicorn itself rejects the HTTP framing before the app sees
  the request, the case says so with ``ByGunicorn(status)``: gunicorn (27) answers every such
  case with its own HTML 4xx (400 bad framing, 414 request line too long, 431 headers too
  large) and closes the connection; none of these cases gets a connection closed without an
  answer. Every other answer comes from the app, as JSON with the status the case names;
- without authentication nothing is written anywhere under the receiver's folder;
- an authenticated body that is accepted lands as sent (same payload, same SHA-256), and one the
  app refuses with 400/415 is kept under ``_rejected/`` with the same hash, except a body that
  could not be read whole (broken chunked framing, a connection cut before Content-Length);
- the server still answers ``/healthz`` afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from core.landing import LandingStore
from tests.conftest import TOKEN, ReceiverProcess, start_receiver, stop_process

MAX_BODY_BYTES = 64 * 1024
WEBHOOK = "/webhooks/flavours/customers"
JSON = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class ByGunicorn:
    """gunicorn refused the HTTP framing itself with this 4xx (an HTML page); the app never ran."""

    status: int


GUNICORN_400 = ByGunicorn(400)


@dataclass(frozen=True)
class Case:
    """One raw request, whether it carries the right token, and the answer it must get."""

    id: str
    request: bytes
    expect: int | ByGunicorn
    authenticated: bool
    body: bytes | None = None
    """The body the receiver reads, when it is a webhook body (for the landed hash)."""
    half_close: bool = False
    """Close our sending side after the request, so a server waiting for more bytes sees EOF."""
    kept: bool = True
    """An authenticated 400/415 keeps the body under ``_rejected/``; unreadable bodies cannot be."""


def target(path: str, *params: str) -> str:
    query = "&".join(p for p in params if p)
    return f"{path}?{query}" if query else path


def raw_request(
    method: str,
    path: str,
    headers: tuple[tuple[str, str], ...] = JSON,
    body: bytes = b"",
    content_length: bool = True,
) -> bytes:
    """An HTTP/1.1 request as bytes; header text is latin-1, as on the wire."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def both(
    name: str,
    build: Callable[[str], bytes],
    expect: int | ByGunicorn,
    unauthenticated: int | ByGunicorn = 401,
    body: bytes | None = None,
    half_close: bool = False,
    kept: bool = True,
) -> list[Case]:
    """The case with the token in the query, and the same case without it."""
    token = f"token={TOKEN}"
    return [
        Case(f"{name}-authenticated", build(token), expect, True, body, half_close, kept),
        Case(f"{name}-unauthenticated", build(""), unauthenticated, False, body, half_close, kept),
    ]


def post(
    name: str,
    body: bytes,
    expect: int | ByGunicorn,
    headers: tuple[tuple[str, str], ...] = JSON,
    unauthenticated: int | ByGunicorn = 401,
) -> list[Case]:
    """A POST of ``body`` to the customers webhook, with and without the token."""
    return both(
        name,
        lambda token: raw_request("POST", target(WEBHOOK, token), headers, body),
        expect,
        unauthenticated,
        body=body,
    )


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def one(
    name: str, request: bytes, expect: int | ByGunicorn, authenticated: bool, **kw
) -> list[Case]:
    return [Case(name, request, expect, authenticated, **kw)]


EVENT = b'{"xid": "hostile-1", "action": "customers.UPDATE", "data": {"id": "c-1"}}'
DEEP_ARRAYS = b"[" * 20_000 + b"]" * 20_000
DEEP_OBJECTS = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
CHUNKED = (("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"))


def _chunked_post(chunks: bytes, headers=CHUNKED) -> Callable[[str], bytes]:
    return lambda token: raw_request("POST", target(WEBHOOK, token), headers, chunks, False)


CASES: list[Case] = [
    # -- bodies ------------------------------------------------------------------------------
    *post("empty-body", b"", 400),
    *post("truncated-json", b'{"xid": "a", "data": {"id": ', 400),
    *post("invalid-utf8", b'{"xid": "caf\xe9 \xff"}', 400),
    *post("utf8-encoded-surrogate", b'{"xid": "\xed\xa0\x80"}', 400),
    *post("deeply-nested-arrays", DEEP_ARRAYS, 400),
    *post("deeply-nested-objects", DEEP_OBJECTS, 400),
    *post("huge-floats", b'{"xid": "big", "n": 1e400, "m": -1e400, "tiny": 1e-400}', 202),
    *post("5000-digit-integer", b'{"xid": "digits", "n": ' + b"7" * 5000 + b"}", 202),
    *post("duplicate-keys", b'{"xid": "a", "xid": "b", "data": {"id": "1", "id": "2"}}', 202),
    *post("nan", b'{"xid": "a", "n": NaN}', 400),
    *post("infinity", b'{"xid": "a", "n": -Infinity}', 400),
    *post("utf8-bom", b"\xef\xbb\xbf" + EVENT, 400),
    *post("utf16-body", EVENT.decode().encode("utf-16"), 400),
    *post("json-array", b'[{"xid": "a"}]', 400),
    *post("json-string", b'"{\\"xid\\": \\"a\\"}"', 400),
    *post("json-number", b"42", 400),
    *post("json-null", b"null", 400),
    *post("escaped-lone-surrogate-and-nul", b'{"xid": "\\ud800", "s": "a\\u0000b"}', 202),
    *post("raw-control-character-in-string", b'{"xid": "a\x01b"}', 400),
    *post("line-breaks-between-tokens", b'{\r\n"xid":\n"lines",\r"n": 1\n}\n', 202),
    *post("trailing-garbage", EVENT + b" garbage", 400),
    *post("missing-content-type", EVENT, 415, headers=()),
    *post("text-plain-content-type", EVENT, 415, headers=(("Content-Type", "text/plain"),)),
    *post(
        "form-content-type",
        EVENT,
        415,
        headers=(("Content-Type", "application/x-www-form-urlencoded"),),
    ),
    *post(
        "multipart-content-type",
        EVENT,
        415,
        headers=(("Content-Type", "multipart/form-data; boundary=xyz"),),
    ),
    *post(
        "latin1-body-declared-as-latin1",
        '{"xid": "café"}'.encode("latin-1"),
        400,
        headers=(("Content-Type", "application/json; charset=latin-1"),),
    ),
    *post(
        "gzip-content-encoding",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00C\xbf\xa6\xa3\x02\x00\x00\x00",
        400,
        headers=(("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
    ),
    *post("body-over-max-bytes", b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}', 413),
    # -- methods -----------------------------------------------------------------------------
    *[
        case
        for method in ("GET", "PUT", "DELETE", "PATCH", "FOO")
        for case in both(
            f"method-{method}",
            lambda token, m=method: raw_request(m, target(WEBHOOK, token), JSON, EVENT),
            405,
            unauthenticated=405,
        )
    ],
    *both(
        "lower-case-method",
        lambda token: raw_request("post", target(WEBHOOK, token), JSON, EVENT),
        GUNICORN_400,
        GUNICORN_400,
    ),
    # -- tokens, query and header injection --------------------------------------------------
    *one(
        "token-param-name-upper-case",
        raw_request("POST", target(WEBHOOK, f"TOKEN={TOKEN}"), JSON, EVENT),
        401,
        False,
    ),
    *one(
        "token-value-upper-case",
        raw_request("POST", target(WEBHOOK, f"token={TOKEN.upper()}"), JSON, EVENT),
        401,
        False,
    ),
    *one(
        "token-header-name-lower-case",
        raw_request("POST", WEBHOOK, (*JSON, ("x-flavours-token", TOKEN)), EVENT),
        202,
        True,
        body=EVENT,
    ),
    *one(
        "two-token-params-right-one-first",
        raw_request("POST", target(WEBHOOK, f"token={TOKEN}", "token=wrong"), JSON, EVENT),
        202,
        True,
        body=EVENT,
    ),
    *one(
        "two-token-params-wrong-one-first",
        raw_request("POST", target(WEBHOOK, "token=wrong", f"token={TOKEN}"), JSON, EVENT),
        401,
        False,
    ),
    *one(
        "empty-token-header-beats-right-query-token",
        raw_request(
            "POST", target(WEBHOOK, f"token={TOKEN}"), (*JSON, ("X-Flavours-Token", "")), EVENT
        ),
        401,
        False,
    ),
    *one(
        "token-with-appended-bytes",
        raw_request("POST", target(WEBHOOK, f"token={TOKEN}%00"), JSON, EVENT),
        401,
        False,
    ),
    *both(
        "crlf-injection-in-query",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token, "x=%0d%0aX-Injected:%201"), JSON, EVENT
        ),
        202,
        body=EVENT,
    ),
    *both(
        "bare-lf-in-header-value",
        lambda token: raw_request(
            "POST",
            target(WEBHOOK, token),
            (*JSON, ("X-Trace", f"a\nX-Flavours-Token: {TOKEN}")),
            EVENT,
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "bare-cr-in-header-value",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("X-Trace", "a\rb")), EVENT
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "nul-in-header-value",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("X-Trace", "a\x00b")), EVENT
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "obsolete-header-folding",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("X-Trace", "a\r\n folded")), EVENT
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "space-in-header-name",
        lambda token: raw_request("POST", target(WEBHOOK, token), (*JSON, ("X Trace", "a")), EVENT),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "non-ascii-header-value",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("X-Trace", "caf\xc3\xa9 \xff")), EVENT
        ),
        202,
        body=EVENT,
    ),
    # -- paths and topics --------------------------------------------------------------------
    *[
        case
        for name, path in (
            ("dot-dot-segment", "/webhooks/flavours/../flavours/customers"),
            ("encoded-dot-dot", "/webhooks/flavours/%2e%2e/customers"),
            ("topic-dot-dot-topic", "/webhooks/flavours/customers/../orders"),
            ("encoded-slash-in-topic", "/webhooks/flavours/customers%2Forders"),
            ("trailing-slash", "/webhooks/flavours/customers/"),
            ("upper-case-topic", "/webhooks/flavours/CUSTOMERS"),
            ("nul-in-topic", "/webhooks/flavours/customers%00"),
            ("rejected-prefix-as-topic", "/webhooks/flavours/_rejected"),
            ("long-topic", "/webhooks/flavours/" + "c" * 3000),
        )
        for case in both(
            name,
            lambda token, p=path: raw_request("POST", target(p, token), JSON, EVENT),
            404,
            unauthenticated=404,
        )
    ],
    *both(
        "double-slash-is-the-same-endpoint",
        lambda token: raw_request("POST", target("/" + WEBHOOK, token), JSON, EVENT),
        202,
        body=EVENT,
    ),
    *both(
        "request-line-over-gunicorn-limit",
        lambda token: raw_request("POST", target("/webhooks/flavours/" + "c" * 9000, token)),
        ByGunicorn(414),
        ByGunicorn(414),
    ),
    *both(
        "absolute-form-target",
        lambda token: raw_request(
            "POST", "http://evil.example" + target(WEBHOOK, token), JSON, EVENT
        ),
        202,
        body=EVENT,
    ),
    # -- header sizes ------------------------------------------------------------------------
    *both(
        "header-over-gunicorn-limit",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("X-Big", "b" * 9000)), EVENT
        ),
        ByGunicorn(431),
        ByGunicorn(431),
    ),
    *both(
        "too-many-headers",
        lambda token: raw_request(
            "POST",
            target(WEBHOOK, token),
            (*JSON, *((f"X-H{i}", "v") for i in range(150))),
            EVENT,
        ),
        ByGunicorn(431),
        ByGunicorn(431),
    ),
    # -- framing -----------------------------------------------------------------------------
    *both("chunked-body", _chunked_post(chunked(EVENT[:10], EVENT[10:])), 202, body=EVENT),
    *both(
        "chunked-with-extension",
        _chunked_post(b"%x;ext=1\r\n%s\r\n0\r\n\r\n" % (len(EVENT), EVENT)),
        202,
        body=EVENT,
    ),
    *both(
        "chunked-bad-size",
        _chunked_post(b"zz\r\n" + EVENT + b"\r\n0\r\n\r\n"),
        400,
        kept=False,
    ),
    *both(
        "chunked-size-larger-than-data",
        _chunked_post(b"ffff\r\n" + EVENT),
        400,
        half_close=True,
        kept=False,
    ),
    *both(
        "chunked-missing-last-chunk",
        _chunked_post(b"%x\r\n%s\r\n" % (len(EVENT), EVENT)),
        400,
        half_close=True,
        kept=False,
    ),
    *both(
        "chunked-body-over-max-bytes",
        _chunked_post(chunked(*[b"x" * 8192] * 10)),
        413,
    ),
    *both(
        "content-length-and-chunked",
        lambda token: raw_request(
            "POST",
            target(WEBHOOK, token),
            (*CHUNKED, ("Content-Length", "5")),
            chunked(EVENT),
            False,
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "content-length-longer-than-body",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("Content-Length", "500")), EVENT, False
        ),
        400,
        half_close=True,
        kept=False,
    ),
    *both(
        "content-length-shorter-than-body",
        lambda token: raw_request(
            "POST",
            target(WEBHOOK, token),
            (*JSON, ("Content-Length", str(len(EVENT)))),
            EVENT + b"GARBAGE /x HTTP/1.1\r\n\r\n",
            False,
        ),
        202,
        body=EVENT,
    ),
    *both(
        "negative-content-length",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("Content-Length", "-1")), EVENT, False
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "non-numeric-content-length",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("Content-Length", "12abc")), EVENT, False
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "two-different-content-lengths",
        lambda token: raw_request(
            "POST",
            target(WEBHOOK, token),
            (*JSON, ("Content-Length", str(len(EVENT))), ("Content-Length", "3")),
            EVENT,
            False,
        ),
        GUNICORN_400,
        GUNICORN_400,
    ),
    *both(
        "gzip-transfer-coding-before-chunked-is-read-as-chunked",
        lambda token: raw_request(
            "POST",
            target(WEBHOOK, token),
            (*JSON, ("Transfer-Encoding", "gzip, chunked")),
            chunked(EVENT),
            False,
        ),
        202,
        body=EVENT,
    ),
    *both(
        "expect-100-continue",
        lambda token: raw_request(
            "POST", target(WEBHOOK, token), (*JSON, ("Expect", "100-continue")), EVENT
        ),
        202,
        body=EVENT,
    ),
    *one("garbage-request-line", b"HELLO THERE\r\n\r\n", GUNICORN_400, False),
    *one(
        "unknown-http-version",
        b"POST " + WEBHOOK.encode() + b" HTTP/9.9\r\nHost: x\r\n\r\n",
        GUNICORN_400,
        False,
    ),
    *one("binary-noise", bytes(range(256)) * 4, GUNICORN_400, False),
]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(port: int, request: bytes, half_close: bool) -> Answer | None:
    """Send raw bytes and read one response; ``None`` when the server closes without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything we send
        response = http.client.HTTPResponse(sock, method=request.split(b" ", 1)[0].decode())
        try:
            response.begin()
            body = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder`` (hidden temporary files included), except receiver logs."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith("receiver-")
    }


def strict_json(text: bytes | str) -> object:
    """Parse as standard JSON only: no NaN/Infinity, integers of any length."""

    def no_constants(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_int=Decimal, parse_constant=no_constants)


def landed_envelope(landing: Path, prefix: str, request_id: str) -> tuple[dict, bytes]:
    """The envelope (and its raw line) that ``request_id`` landed under ``prefix``."""
    store = LandingStore(str(landing))
    for obj in store.list_objects(prefix):
        for line in store.iter_lines(obj.key):
            envelope = strict_json(line)
            if envelope["request_id"] == request_id:
                return envelope, line
    raise AssertionError(f"request {request_id} did not land under {prefix}")


@dataclass
class HostileTarget:
    receiver: ReceiverProcess
    base: Path
    landing: Path

    @property
    def port(self) -> int:
        return int(self.receiver.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def hostile_target(tmp_path_factory) -> Iterator[HostileTarget]:
    """One real gunicorn receiver for the whole catalogue, with a 64 KiB body limit."""
    base = tmp_path_factory.mktemp("hostile")
    landing = base / "landing"
    landing.mkdir()
    receiver = start_receiver(
        base, str(landing), extra_env={"FLAVOURS_MAX_BODY_BYTES": str(MAX_BODY_BYTES)}
    )
    try:
        yield HostileTarget(receiver, base, landing)
    finally:
        stop_process(receiver.proc)


def test_catalogue_is_large_and_has_unique_ids():
    assert len({case.id for case in CASES}) == len(CASES)
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_request_gets_a_4xx_or_2xx_and_lands_only_when_authenticated(
    hostile_target: HostileTarget, case: Case
):
    before = files_under(hostile_target.base)

    answer = exchange(hostile_target.port, case.request, case.half_close)

    new_files = files_under(hostile_target.base) - before
    assert answer is not None, "the server closed the connection without an answer"
    assert answer.status < 500, answer
    if isinstance(case.expect, ByGunicorn):
        assert answer.status == case.expect.status, answer
        assert answer.headers["content-type"].startswith("text/html"), "gunicorn's own page"
        assert "x-request-id" not in answer.headers, "gunicorn, not the app, should refuse this"
    else:
        assert answer.status == case.expect, answer
        assert answer.headers["content-type"] == "application/json", answer
        reply = json.loads(answer.body)
        assert reply["status"] == ("accepted" if answer.status == 202 else "error")

    lands = case.authenticated and (answer.status == 202 or case.kept)
    if not lands or isinstance(case.expect, ByGunicorn) or answer.status not in (202, 400, 415):
        assert not new_files, f"landed without being accepted or authenticated: {new_files}"
    elif answer.status == 202:
        envelope, line = landed_envelope(hostile_target.landing, "customers", reply["request_id"])
        assert envelope["payload"] == strict_json(case.body)
        assert envelope["body_sha256"] == hashlib.sha256(case.body).hexdigest()
        assert b"\n" not in line
        assert b"\r" not in line
        assert TOKEN not in line.decode("utf-8", "replace")
    else:
        prefix = "_rejected/customers"
        kept, _ = landed_envelope(hostile_target.landing, prefix, reply["request_id"])
        assert kept["status"] == answer.status
        if case.body is not None:
            assert kept["body_sha256"] == hashlib.sha256(case.body).hexdigest()
    assert all(name.startswith(("landing/customers/", "landing/_rejected/")) for name in new_files)

    health = exchange(hostile_target.port, raw_request("GET", "/healthz", ()), False)
    assert health is not None
    assert health.status == 200
