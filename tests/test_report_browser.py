"""report.html in a real headless browser (Debian's chromium, installed by .ci/run).

Chromium loads the page from disk, runs its inline script and dumps the resulting DOM; with
`--enable-logging=stderr` every console message (script errors, Content Security Policy
violations) appears on stderr as an `INFO:CONSOLE` line. The page's script writes what it shows
into `#browser-status`, so the test reads the step and completion count the browser displays.
A control run with a deliberately broken script proves that errors would be caught.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from _report_run import write_fake_run

from smolgrpo.reporting import html as report_html
from smolgrpo.reporting.report import write_report

CHROMIUM = next(
    (
        shutil.which(name)
        for name in ("chromium", "chromium-browser", "google-chrome")
        if shutil.which(name)
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: install it with `apt-get install -y chromium` (.ci/run does)",
)
CONSOLE_LINE = re.compile(r":CONSOLE[:(].*")


def run_chromium(tmp_path, url: str, *flags: str) -> tuple[str, list[str]]:
    """(stdout, console messages) of one headless chromium run."""
    command = [
        CHROMIUM,
        "--headless",
        # Chromium refuses to start as root with its sandbox on, and CI containers run as root;
        # the page is a local file this test wrote, so running it unsandboxed risks nothing.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *flags,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, CONSOLE_LINE.findall(result.stderr)


def visible_steps(dom: str) -> list[tuple[str, int]]:
    """(step, number of completions) of each step block the script left visible."""
    shown = []
    for block in re.split(r'<div class="step" ', dom)[1:]:
        opening = block.split(">", 1)[0]
        if "hidden" not in opening:
            step = re.search(r'data-step="(\d+)"', opening).group(1)
            shown.append((step, block.count('<li class="completion')))
    return shown


def status_of(dom: str) -> dict:
    tag = re.search(r'<span id="browser-status"([^>]*)>', dom).group(1)
    return dict(re.findall(r'data-(\w+)="([^"]*)"', tag))


def test_report_loads_without_console_errors_and_shows_a_step(tmp_path):
    write_fake_run(tmp_path / "run", steps=20)
    page = write_report(tmp_path / "run", smooth=3)["paths"]["html"]

    dom, console = run_chromium(tmp_path, page.as_uri() + "#step-10", "--dump-dom")
    assert console == [], console
    assert status_of(dom) == {"state": "ready", "step": "10", "completions": "8"}
    assert visible_steps(dom) == [("10", 8)]
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom).group(1)  # no script ran

    dom, console = run_chromium(tmp_path, page.as_uri(), "--dump-dom")  # no hash: first step
    assert console == [] and visible_steps(dom) == [("1", 8)]

    screenshot = tmp_path / "report.png"
    run_chromium(tmp_path, page.as_uri(), f"--screenshot={screenshot}", "--window-size=1280,2000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_script_error_would_be_caught(tmp_path, monkeypatch):
    broken = report_html.SCRIPT.replace("show(start);", "show(start); notDefined();")
    monkeypatch.setattr(report_html, "SCRIPT", broken)
    write_fake_run(tmp_path / "run", steps=5)
    page = write_report(tmp_path / "run")["paths"]["html"]
    _, console = run_chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert any("notDefined" in line for line in console), console
