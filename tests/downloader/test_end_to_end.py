"""The three real subcommands with a real file server and callback receiver (issue 4
acceptance): success, 404, MIME mismatch, image size, transient 5xx then success,
max_retries, and 300 jobs over 5 aggregations with the cap measured at the file server."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from .servers import HTML, png_bytes, webp_bytes
from .stack import Stack

CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("success", "/file/page.html", {"extra": "x1"},
     {"success": True, "error": "", "response_code": 200, "extra": "x1"}),
    ("not-found", "/status/404", {},
     {"success": False, "response_code": 404, "download_url": "",
      "error": "Error while processing response, Received status code 404 Not Found, "
               "retriable: false, internal: false"}),
    ("mime-mismatch", "/file/page.html", {"mime_type": "image/*"},
     {"success": False, "response_code": 200,
      "error": "Error while validating mime type, Expected mime-type to be (image/*), "
               "found (text/html), retriable: false, internal: false"}),
    ("mime-any", "/file/pic.png", {"mime_type_any": ["image/jpeg", "image/png"]},
     {"success": True}),
    ("image-size-png", "/file/pic.png", {"extract_image_size": True, "mime_type": "image/*"},
     {"success": True, "image_size": "10x7"}),
    ("image-size-webp", "/file/pic.webp", {"extract_image_size": True},
     {"success": True, "image_size": "3x5"}),
    ("transient-5xx", "/flaky/f2/2", {}, {"success": True, "response_code": 200}),
    ("max-retries", "/flaky/f9/9", {"max_retries": 1},
     {"success": False, "response_code": 503,
      "error": "Error while processing response, Received status code 503 Service "
               "Unavailable, retriable: true, internal: false"}),
    ("gzip-stored-decoded", "/gzip", {"request_headers": {"Accept-Encoding": "gzip"}},
     {"success": True}),
]


async def test_end_to_end_cases(stack: Stack) -> None:
    await stack.start()
    stack.files.files.update({
        "page.html": (HTML, "text/html"),
        "pic.png": (png_bytes(10, 7), "image/png"),
        "pic.webp": (webp_bytes(3, 5), "image/webp"),
    })
    ids = {}
    for name, path, fields, _ in CASES:
        ids[name] = await stack.post(stack.file_url + path, aggr_id=f"e2e-{name}", **fields)
    await stack.receiver.wait_for_jobs(set(ids.values()), timeout=60)
    for name, path, _, expected in CASES:
        got = stack.receiver.one(ids[name])
        assert {k: got[k] for k in expected} == expected, name
        assert got["resource_url"] == stack.file_url + path
        if got["success"]:
            job_id = ids[name]
            assert got["download_url"] == f"http://localhost/assets/{job_id[:3]}/{job_id}"
            stored = stack.storage / job_id[:3] / job_id
            if path.endswith(".html") or path == "/gzip":
                assert stored.read_bytes() == HTML
    assert stack.files.hits["f2"] == 3
    assert stack.files.hits["f9"] == 2  # max_retries 1: two attempts
    # Delivered callbacks delete the job hash and schedule the file (spec §4).
    import redis

    from tests.support.ports import async_wait_for

    r = redis.Redis(port=stack.redis.port)
    try:
        # The receiver answers before the notifier records the delivery: wait for it.
        await async_wait_for(lambda: r.zcard("JobDeletionQueue") == len(ids), 20,
                             "every delivery to be recorded")
        assert all(not r.exists(f"job:{i}") for i in ids.values())
        assert r.zcard("JobDeletionQueue") == len(ids)
        assert r.zcard("DownloadsInFlight") == 0 and r.zcard("CallbacksInFlight") == 0
    finally:
        r.close()
    # Prometheus /metrics per component: the api on its own port, the others on
    # --metrics-addr; the original's expvar keys become gauges.
    assert stack.session is not None
    async with stack.session.get(stack.api_url + "/metrics") as resp:
        assert resp.status == 200 and "python_gc" in await resp.text()
    for name, metric in (("processor", "downloader_processor_download_response_404 1.0"),
                         ("notifier", "downloader_notifier_successfulCallbacks")):
        url = f"http://127.0.0.1:{stack.metrics_ports[name]}/metrics"
        async with stack.session.get(url) as resp:
            assert metric in await resp.text(), name
    await stack.stop_gracefully()


async def test_load_300_jobs_over_5_aggregations(stack: Stack) -> None:
    await stack.start()
    body = b"x" * 10240
    stack.files.files["blob"] = (body, "application/octet-stream")
    aggrs = [f"load{i}" for i in range(5)]
    sem = asyncio.Semaphore(60)  # the original's 60 concurrent posters

    async def post(i: int) -> str:
        aggr = aggrs[i % 5]
        async with sem:
            return await stack.post(f"{stack.file_url}/file/blob?a={aggr}&delay=0.03",
                                    aggr_id=aggr, aggr_limit=10)

    ids = await asyncio.gather(*(post(i) for i in range(300)))
    await stack.receiver.wait_for_jobs(set(ids), timeout=120)
    assert all(stack.receiver.one(i)["success"] for i in ids)
    for aggr in aggrs:
        assert 1 <= stack.files.peak[aggr] <= 10, (aggr, stack.files.peak)
    # The cap is never exceeded, and downloads did run concurrently (how close they get to
    # the cap depends on how busy the machine is, so that is not asserted).
    assert 2 <= max(stack.files.peak.values()) <= 10
    sample = random.Random(4).sample(ids, 10)
    for job_id in sample:
        assert (stack.storage / job_id[:3] / job_id).read_bytes() == body


def test_storage_layout(tmp_path: Path) -> None:
    from pazari.downloader.storage import FileStorage

    fs = FileStorage(str(tmp_path), str(tmp_path / "root"))
    fs.check_writable()
    tmp = fs.tmp_path("6QEywYsd0jrKAg")
    Path(tmp).write_bytes(b"data")
    fs.store(tmp, "6QE/6QEywYsd0jrKAg")
    assert (tmp_path / "root" / "6QE" / "6QEywYsd0jrKAg").read_bytes() == b"data"
    fs.delete("6QE/6QEywYsd0jrKAg")
    fs.delete("6QE/6QEywYsd0jrKAg")  # a missing file is not an error
    assert not (tmp_path / "root" / "6QE" / "6QEywYsd0jrKAg").exists()


pytestmark = pytest.mark.timeout(180)
