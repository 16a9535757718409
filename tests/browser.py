"""Headless Chromium (Debian's ``chromium``) for the dashboard tests: the page's DOM after its
scripts ran, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_TIMEOUT_S = 120


def chromium() -> str:
    """The Chromium binary; the test is skipped, saying how to get it, when there is none."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    pytest.skip("headless Chromium is not installed (`make test` installs Debian's chromium)")


def _run(url: str, work: Path, *args: str) -> subprocess.CompletedProcess:
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={work / 'profile'}",
            "--window-size=1280,2600",
            "--virtual-time-budget=30000",  # lets the page's requests and scripts finish
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )


def rendered_dom(url: str, work: Path) -> str:
    """The page's DOM once its scripts and requests have settled."""
    result = _run(url, work, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path: Path) -> Path:
    result = _run(url, path.parent / "shot", f"--screenshot={path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert path.stat().st_size > 10_000, "a real picture, not an empty page"
    return path
