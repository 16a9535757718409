"""`flavours load` as a user runs it: a failed load ends in one line saying why."""

from __future__ import annotations

import os

from tests.conftest import run_cli


def test_a_failed_load_ends_with_one_line_naming_the_cause(tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    env = {
        **os.environ,
        "FLAVOURS_LANDING_URL": str(tmp_path / "landing"),
        "FLAVOURS_WAREHOUSE": str(tmp_path / "not-a-folder" / "warehouse.sqlite"),
        "FLAVOURS_DLT_DIR": str(tmp_path / "dlt"),
        "FLAVOURS_LOG_LEVEL": "WARNING",
    }

    result = run_cli("flavours", "load", env=env, timeout=180)

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"Error: load failed: FileExistsError: [Errno 17] File exists: "
        f"'{tmp_path / 'not-a-folder'}'. Re-running is safe once the cause is fixed."
    )
    assert "STEP_FAILURE" in result.stderr  # Dagster's log keeps the step and its trace
