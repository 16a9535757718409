"""moto's S3 server on loopback, for the tests and the benchmarks: a real S3 API, not an
in-process mock, with the throwaway credentials moto accepts."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass

from cli.devtools import BIN, free_port, start, stop, wait_healthy

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""What moto's S3 server accepts (any credentials do)."""


@dataclass
class S3Server:
    """moto's S3 server on loopback: its endpoint, its process and the environment to reach it."""

    endpoint: str
    proc: subprocess.Popen
    env: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def new_bucket(self) -> str:
        import boto3

        name = f"landing-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=name)
        return name


def start_s3_server() -> S3Server:
    """Start moto's S3 server in its own process group on a free loopback port and wait until
    it answers (for tests and benchmarks: a real S3 API, not an in-process mock). Stop it with
    ``stop(server.proc)``."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = start(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        {**os.environ, **S3_CREDENTIALS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(endpoint, proc, what="moto's S3 server")
    except BaseException:
        stop(proc)
        raise
    return S3Server(endpoint, proc, {"AWS_ENDPOINT_URL": endpoint, **S3_CREDENTIALS})
