"""A throwaway Postgres cluster on loopback (Debian's ``postgresql`` package), for the tests of
the shared warehouse catalog. ``make test`` installs the package where it is missing and it can;
``find_postgres_bin`` says why not otherwise, and the tests that need it skip with that reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cli.devtools import free_port, start, stop

USER = "flavours"
DATABASE = "warehouse"
START_TIMEOUT_S = 30


@dataclass(frozen=True)
class PostgresServer:
    port: int
    proc: subprocess.Popen

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"


def find_postgres_bin() -> tuple[Path | None, str]:
    """The folder of ``initdb`` and ``postgres``, or None and why not."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if on_path := shutil.which("initdb"):
        candidates.insert(0, on_path)
    if not candidates:
        return None, (
            "Postgres is not installed (Debian package postgresql; `make test` installs it)"
        )
    return Path(candidates[0]).resolve().parent, ""


def _run_as() -> dict:
    """Postgres refuses to run as root: as root, run it as the ``postgres`` account."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam("postgres")
    return {"user": account.pw_uid, "group": account.pw_gid}


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A new cluster with user ``flavours`` (trust on loopback) and database ``warehouse``."""
    bindir, why = find_postgres_bin()
    if bindir is None:
        raise RuntimeError(why)
    as_user = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="flavours-pg-"))
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    data = folder / "data"
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8"],
            env=env,
            capture_output=True,
            check=True,
            timeout=120,
            **as_user,
        )
        port = free_port()
        proc = start(
            [
                *(str(bindir / "postgres"), "-D", str(data), "-p", str(port)),
                *("-h", "127.0.0.1", "-k", str(folder)),
                *("-c", "fsync=off", "-c", "max_connections=100"),
            ],
            env,
            stdout=subprocess.DEVNULL,
            stderr=(folder / "postgres.log").open("w"),
            **as_user,
        )
        server = PostgresServer(port, proc)
        try:
            _wait_ready(bindir, server)
            subprocess.run(
                [
                    str(bindir / "createdb"),
                    *("-h", "127.0.0.1", "-p", str(port), "-U", USER),
                    DATABASE,
                ],
                env=env,
                capture_output=True,
                check=True,
                timeout=60,
            )
            yield server
        finally:
            stop(proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(bindir: Path, server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with code {server.proc.returncode}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(server.port), "-U", USER],
            capture_output=True,
            timeout=10,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT_S} s")
