"""A warehouse reader in its own process, as an analyst's session or a dashboard is.

``python -m tests.reader_loop OUT STOP`` (settings from ``FLAVOURS_*``) holds one
``connect_reader()`` connection open and, until the file STOP exists (at most
``READER_MAX_S`` seconds), asks the same question on it and on a new connection each round.
Each answer is one JSON line in OUT; an error is a line with ``error`` instead of ``answer``.
The first line (``ready``) is written once the held connection is open.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from warehouse import connect_reader

QUESTION = """
select
    (select count(*) from raw.customer_events) as raw_events,
    (select count(*) from staging.stg_customer_events) as staged_events,
    (select count(*) from analytics.dim_customer) as versions,
    (select count(*) from analytics.dim_customer_current) as customers,
    (select count(*) from analytics.dim_customer_current where not is_deleted) as live
"""
"""One answer: counts across raw, staging and analytics, each from the same snapshot."""

READER_MAX_S = float(os.environ.get("READER_MAX_S", "600"))


def ask(con) -> list[int]:
    return list(con.sql(QUESTION).fetchone())


def main(out_path: str, stop_path: str) -> None:
    deadline = time.monotonic() + READER_MAX_S
    with Path(out_path).open("a", buffering=1) as out:

        def record(kind: str, answer: list[int] | None, error: BaseException | None) -> None:
            line = {"kind": kind, "at": time.time()}
            if error is None:
                line["answer"] = answer
            else:
                line["error"] = f"{type(error).__name__}: {error}"
            out.write(json.dumps(line) + "\n")

        held = connect_reader()
        record("ready", ask(held), None)
        while not Path(stop_path).exists() and time.monotonic() < deadline:
            for kind in ("held", "new"):
                try:
                    if kind == "held":
                        answer = ask(held)
                    else:
                        with connect_reader() as con:
                            answer = ask(con)
                    record(kind, answer, None)
                except Exception as error:  # every failure is the finding, recorded and counted
                    record(kind, None, error)
            time.sleep(0.05)
        held.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
