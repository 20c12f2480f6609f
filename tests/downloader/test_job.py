"""The callback's download_url: Go's ``path.Join`` of DownloadURL's path and ``id[:3]/id``
(spec §4), computed by a cached fast path for base64url ids; the general path is the oracle."""

from __future__ import annotations

import posixpath
from urllib.parse import urlsplit, urlunsplit

import pytest

from pazari.downloader.job import Job

DOWNLOAD_URLS = ["http://localhost/assets", "http://localhost/assets/", "http://h", "http://h/",
                 "http://h/a/../b//c/", "https://u:p@h:8080/x/./y", "http://h/a?q=1", "//h/p",
                 "http://h//", "http://h///x", "x", "http://h/..", "/a/b", "http://h/a#f",
                 "http://h/%2F/x", "a:b"]
IDS = ["6QEywYsd0jrKAg", "abcDEF123-_xyz", "ab", "a", "../x", "a/b", "..", ""]


def _general(job: Job) -> str:
    parts = urlsplit(job.download_url)
    joined = posixpath.join(parts.path or "/", job.path())
    return urlunsplit((parts.scheme, parts.netloc, posixpath.normpath(joined), "", ""))


@pytest.mark.parametrize("download_url", DOWNLOAD_URLS)
@pytest.mark.parametrize("job_id", IDS)
def test_full_download_url_matches_path_join(download_url: str, job_id: str) -> None:
    job = Job(id=job_id, download_url=download_url)
    assert job.full_download_url() == _general(job)


def test_no_download_url_gives_empty() -> None:
    assert Job(id="6QEywYsd0jrKAg").full_download_url() == ""
