"""Shared fixtures: real servers on loopback (gunicorn receiver, moto's S3 server), temp stores.

Every process a fixture starts is stopped through its own handle; every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cli.devtools import free_port
from cli.devtools import stop as stop_process
from connector import create_app
from core.landing import LandingStore
from tests.s3_server import S3Server, start_s3_server

SHARED = Path(__file__).resolve().parents[2] / "shared"
EXAMPLE_PATH = SHARED / "flavours" / "customer-create.json"
if not EXAMPLE_PATH.exists():  # without shared/ beside the checkout: the packaged copy
    EXAMPLE_PATH = Path(__file__).parents[1] / "cli" / "samples" / "customer-create.json"
VENV_BIN = Path(sys.executable).parent
TOKEN = "test-token-0123456789"


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> None:
    """Poll ``predicate`` until true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def run_cli(
    program: str, *args: str, env: dict[str, str] | None = None, cwd=None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run one of the project's commands from the venv, capturing its text output."""
    return subprocess.run(
        [str(VENV_BIN / program), *args],
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def example_body() -> bytes:
    """The documented Flavours customer.CREATE example, byte for byte."""
    return EXAMPLE_PATH.read_bytes()


@pytest.fixture(scope="session")
def example_event(example_body: bytes) -> dict:
    return json.loads(example_body)


@pytest.fixture
def landing_dir(tmp_path: Path) -> Path:
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def app(landing_dir: Path):
    return create_app({"landing_url": str(landing_dir), "webhook_token": TOKEN})


@pytest.fixture
def client(app):
    return app.test_client()


def landed_lines(url: str, prefix: str = "customers") -> list[dict]:
    """Every envelope landed under ``prefix``, in key order."""
    store = LandingStore(url)
    lines = []
    for obj in store.list_objects(prefix):
        lines.extend(json.loads(line) for line in store.iter_lines(obj.key))
    return lines


# -- moto's S3 server ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in its own process on loopback (so tests can freeze it)."""
    server = start_s3_server()
    try:
        yield server
    finally:
        stop_process(server.proc)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server's endpoint and credentials in this process's environment."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


# -- the receiver under gunicorn -------------------------------------------------------------------


def threads_of(pid: int) -> int:
    """How many threads the process runs: a gunicorn master must run one, as it forks workers
    for as long as it lives (a thread's locks are copied held into every child)."""
    return len(os.listdir(f"/proc/{pid}/task"))


@dataclass
class ReceiverProcess:
    url: str
    proc: subprocess.Popen
    landing_url: str
    log_path: Path

    def webhook_url(self, topic: str = "customers", token: str | None = TOKEN) -> str:
        suffix = f"?token={token}" if token else ""
        return f"{self.url}/webhooks/flavours/{topic}{suffix}"

    def logs(self) -> list[dict]:
        """The receiver's JSON log lines (other lines, e.g. gunicorn's, are skipped)."""
        entries = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                entries.append(json.loads(line))
        return entries


def start_receiver(
    tmp_path: Path,
    landing_url: str,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
    cafile: Path | None = None,
) -> ReceiverProcess:
    """Start ``flavours serve`` on a free loopback port and wait until it answers.

    With ``cafile`` (the receiver's own certificate) it serves HTTPS and is checked against it.
    """
    port = free_port()
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": landing_url,
        "FLAVOURS_WEBHOOK_TOKEN": TOKEN,
        **(extra_env or {}),
    }
    log_path = tmp_path / f"receiver-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(VENV_BIN / "flavours"), "serve", "--port", str(port), *(args or [])],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"{'https' if cafile else 'http'}://127.0.0.1:{port}"
    receiver = ReceiverProcess(url, proc, landing_url, log_path)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"receiver exited early:\n{log_path.read_text()}")
        try:
            return requests.get(
                f"{url}/healthz", timeout=0.5, verify=str(cafile) if cafile else True
            ).ok
        except requests.RequestException:
            return False

    try:
        wait_until(healthy, timeout=30, what="receiver /healthz")
    except BaseException:
        stop_process(proc)
        raise
    return receiver


@pytest.fixture
def receiver(tmp_path: Path, landing_dir: Path) -> Iterator[ReceiverProcess]:
    """A real gunicorn receiver on loopback landing in a temp folder."""
    proc = start_receiver(tmp_path, str(landing_dir))
    try:
        yield proc
    finally:
        stop_process(proc.proc)


@pytest.fixture
def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
