"""The web view rendered by headless Chromium (Debian ``chromium``): the job list shows a
finished job and the job page shows its log. (The live tail itself is tested over SSE in
test_server.py: --dump-dom cannot wait on a stream that never ends.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.mistry.conftest import Mistry
from tests.support.services import missing_dependency


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing_dependency("chromium not found; install it with: apt-get install -y chromium")
        raise AssertionError("unreachable")
    return path


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    argv = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
    ]  # fmt: skip
    done = subprocess.run([*argv, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_job_list_and_job_page(mistry: Mistry, chromium: str, tmp_path: Path) -> None:
    mistry.project("webview", "echo visible-log-line\necho ok > artifacts/ok\n")
    info = mistry.post({"project": "webview", "params": {"k": "v"}}).json()
    job_id = info["URL"].rsplit("/", 1)[-1]
    mistry.project("webfail", "exit 5\n")
    failed_id = mistry.post({"project": "webfail"}).json()["URL"].rsplit("/", 1)[-1]
    home = dump_dom(chromium, mistry.url + "/", tmp_path / "profile")
    row = re.search(rf'<tr><td class="id"><a href="/job/webview/{job_id}">{job_id}</a>.*?</tr>',
                    home)  # fmt: skip
    assert row is not None, home[:3000]
    assert "webview" in row.group(0) and '<td class="state-ready">ready</td>' in row.group(0)
    failed = re.search(rf'<a href="/job/webfail/{failed_id}">.*?</tr>', home)
    assert failed is not None and '<td class="failed">ready (failed)</td>' in failed.group(0)
    page = dump_dom(chromium, f"{mistry.url}/job/webview/{job_id}", tmp_path / "profile")
    log = re.search(r'<pre id="log">(.*?)</pre>', page, re.S)
    assert log is not None and "visible-log-line" in log.group(1)
    assert f"Job {job_id}" in page and "<dd>0</dd>" in page  # ExitCode
