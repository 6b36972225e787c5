"""The report in a real browser: it loads offline with no console errors and its script runs.

Needs headless Chromium (Debian: ``apt-get install chromium``); skipped, with the reason, without it.
Set NORMGATE_SCREENSHOT_DIR to keep the screenshots (otherwise they go to pytest's tmp_path).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from normgate.reports.commands import add_commands

DATA = Path(__file__).parent / "data"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((p for p in (shutil.which(c) for c in CANDIDATES) if p), None)

pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="headless Chromium not found (install it: apt-get install -y chromium)"
)


def chromium(profile: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium isolated from the network, the GPU and any user profile."""
    assert BROWSER is not None
    cmd = [
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def console_messages(stderr: str) -> list[str]:
    """Page console output (errors, CSP violations, uncaught exceptions) from Chromium's log."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


def render(tmp_path: Path, name: str, *argv: str | Path) -> Path:
    out = tmp_path / name
    parser = argparse.ArgumentParser(prog="normgate")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in (*argv, "-o", out)])
    assert args.func(args) == 0
    return out


def screenshot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("NORMGATE_SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


REPORTS = {
    "report-failing-with-bench.html": ("fail.jsonl", "--bench", "bench.json"),
    "report-compare.html": ("pass.jsonl", "fail.jsonl", "worse.jsonl"),
    "report-hostile.html": ("xss.jsonl",),
    "report-truncated.html": ("truncated.jsonl",),
}


@pytest.mark.parametrize("name", list(REPORTS))
def test_report_loads_without_console_errors(tmp_path: Path, name: str):
    argv = [DATA / a if a.endswith((".jsonl", ".json")) else a for a in REPORTS[name]]
    page = render(tmp_path, name, "report", *argv)
    done = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert console_messages(done.stderr) == []
    html_tag = re.search(r"<html[^>]*>", dom)
    assert html_tag is not None
    # the page's script ran to its end (so the CSP hash matched) and caught no error on the way
    assert 'data-js="ok"' in html_tag.group(0), html_tag.group(0)
    assert "data-js-errors" not in html_tag.group(0)
    assert "Sort" in dom  # headers were made sortable
    # nothing injected from the results file became markup
    assert len(re.findall(r"<script\b", dom)) == 1 and "<img" not in dom


def test_screenshot(tmp_path: Path):
    page = render(tmp_path, "report.html", "report", DATA / "fail.jsonl", "--bench", DATA / "bench.json")
    shot = screenshot_dir(tmp_path) / "report.png"
    shot.unlink(missing_ok=True)
    done = chromium(
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1440,900",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one
