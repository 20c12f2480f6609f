"""Hostile downloads end as failed jobs with a clear error within bounded time, through the
real processor code (real Redis, real HTTP servers, in-process for speed)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pazari.downloader.config import Config, ProcessorConfig
from pazari.downloader.fetch import make_client
from pazari.downloader.job import Aggregation, Job
from pazari.downloader.processor import Processor
from pazari.downloader.ssrf import is_forbidden, parse_networks
from pazari.downloader.stats import Stats
from pazari.downloader.storage import FileStorage
from pazari.downloader.store import Store
from tests.support.ports import free_port

from .servers import HTML, FileServer


@pytest.fixture
async def files() -> AsyncIterator[tuple[FileServer, str]]:
    fs = FileServer()
    fs.files["page.html"] = (HTML, "text/html")
    url = await fs.start()
    yield fs, url
    await fs.stop()


@pytest.fixture
async def tls_url(tmp_path: Path) -> AsyncIterator[str]:
    """An HTTPS server with a self-signed certificate the processor must refuse."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()

    async def secret(_: web.Request) -> web.Response:
        return web.Response(text="secret")

    app.add_routes([web.get("/", secret)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    yield f"https://127.0.0.1:{port}/"
    await runner.cleanup()


async def make_processor(store: Store, tmp: Path, **overrides: Any) -> Processor:
    storage = tmp / "storage"
    storage.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "storage_dir": str(storage), "download_url": "http://localhost/a",
        "allow_private_networks": True, "timeout": 3, "read_timeout": 2,
        "max_file_size": 1 << 20, "retry_backoff": 0.1, **overrides}
    pcfg = ProcessorConfig(**settings)
    client = make_client(2, pcfg.read_timeout, pcfg.allow_private_networks,
                         pcfg.allowed_networks, pcfg.max_file_size)
    return Processor(Config(processor=pcfg), store, client,
                     FileStorage(str(storage), str(storage)), Stats("processor"))


async def run_job(proc: Processor, url: str, **fields: Any) -> Job:
    job = Job(id="J" + str(time.monotonic_ns())[-13:], url=url, aggr_id="bad",
              callback_url="http://127.0.0.1:9/cb", max_retries=0, **fields)
    await proc.store.enqueue(job, Aggregation("bad", 4))
    [popped] = await proc.store.pop_downloads("bad", 1, 30)
    await asyncio.wait_for(proc.perform(popped, Aggregation("bad", 4)), timeout=15)
    done = await proc.store.get_job(job.id)
    assert done is not None
    return done


BAD: list[tuple[str, str, dict[str, Any], str]] = [
    ("slow-drip", "/drip", {},
     "Error while downloading file, download did not finish within the 3s limit, "
     "retriable: false"),
    ("endless-body", "/endless", {},
     "Error while downloading file, file exceeds the maximum size of 1048576 bytes, "
     "retriable: false"),
    ("redirect-loop", "/loop/0", {}, "stopped after 10 redirects, retriable: true"),
    ("short-body", "/short", {}, "Error while downloading file, unexpected EOF"),
    ("job-timeout", "/drip", {"download_timeout": 1},
     "context deadline exceeded (download_timeout 1s), retriable: true"),
    ("unsupported-scheme", "ftp://127.0.0.1/x", {}, 'unsupported protocol scheme "ftp"'),
    ("connection-refused", "http://127.0.0.1:9/x", {}, "retriable: true"),
]


@pytest.mark.parametrize(("path", "fields", "error"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
async def test_bad_download_fails_clearly(store: Store, tmp_path: Path,
                                          files: tuple[FileServer, str], path: str,
                                          fields: dict[str, Any], error: str) -> None:
    proc = await make_processor(store, tmp_path)
    try:
        url = path if "://" in path else files[1] + path
        started = time.monotonic()
        job = await run_job(proc, url, **fields)
        assert time.monotonic() - started < 10
    finally:
        await proc.client.close()
    assert job.download_state == "Failed"
    assert error in job.download_meta, job.download_meta
    assert job.callback_state == "Pending"
    assert not list((tmp_path / "storage").glob("*.tmp"))
    assert await store.r.zcard("DownloadsInFlight") == 0


async def test_tls_error_is_not_retriable(store: Store, tmp_path: Path, tls_url: str) -> None:
    proc = await make_processor(store, tmp_path)
    try:
        job = await run_job(proc, tls_url)
    finally:
        await proc.client.close()
    assert job.download_state == "Failed"
    assert job.download_meta.startswith("Error while performing request, TLS Error occured: ")
    # Python's ssl says "certificate verify failed", libcurl "OpenSSL verify result".
    assert ("certificate verify failed" in job.download_meta
            or "OpenSSL verify result: self-signed certificate" in job.download_meta)
    assert job.download_meta.endswith("retriable: false, internal: false")
    assert job.response_code == 0
    assert proc.stats.values["download.response.tls"] == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254",
                                  "10.1.2.3", "192.168.0.1"])
async def test_private_addresses_refused(store: Store, tmp_path: Path,
                                         files: tuple[FileServer, str], host: str) -> None:
    proc = await make_processor(store, tmp_path, allow_private_networks=False)
    port = files[1].rsplit(":", 1)[1]
    try:
        job = await run_job(proc, f"http://{host}:{port}/file/page.html")
    finally:
        await proc.client.close()
    assert job.download_state == "Failed"
    assert "private, loopback or link-local address" in job.download_meta
    assert job.download_meta.endswith("retriable: false, internal: false")
    assert files[0].hits["page.html"] == 0


@pytest.mark.parametrize("target", ["http://127.0.0.2:{port}/file/page.html",
                                    "http://10.0.0.1/", "http://[::ffff:127.0.0.3]:9/"])
async def test_redirect_to_private_refused(store: Store, tmp_path: Path,
                                           files: tuple[FileServer, str], target: str) -> None:
    """Every redirect hop is checked: the first hop is allowed (operator allowlist), the
    redirect to another private address is refused before any connection."""
    proc = await make_processor(store, tmp_path, allow_private_networks=False,
                                allowed_networks=["127.0.0.1/32"])
    port = files[1].rsplit(":", 1)[1]
    try:
        first = await run_job(proc, files[1] + "/file/page.html")
        job = await run_job(proc, files[1] + "/to?u=" + target.format(port=port))
    finally:
        await proc.client.close()
    assert first.download_state == "Success"
    assert job.download_state == "Failed"
    assert "private, loopback or link-local address" in job.download_meta
    assert files[0].hits["page.html"] == 1


def test_forbidden_addresses() -> None:
    assert is_forbidden("127.0.0.1") and is_forbidden("::ffff:10.0.0.1")
    assert is_forbidden("fe80::1") and is_forbidden("0.0.0.0")
    assert not is_forbidden("93.184.216.34")
    assert not is_forbidden("127.0.0.1", parse_networks(["127.0.0.0/8"]))


@pytest.mark.parametrize("sync", ["batch", "file"])
async def test_sync_modes_store_the_file(store: Store, tmp_path: Path,
                                         files: tuple[FileServer, str], sync: str) -> None:
    """Both ways of making a file durable (one syncfs per batch, or fsync per file) put
    the bytes in place under id[:3]/id and leave no temp file."""
    proc = await make_processor(store, tmp_path, sync=sync)
    try:
        jobs = [await run_job(proc, files[1] + "/file/page.html") for _ in range(3)]
    finally:
        await proc.client.close()
    for job in jobs:
        assert job.download_state == "Success", job.download_meta
        assert (tmp_path / "storage" / job.path()).read_bytes() == HTML
    assert not list((tmp_path / "storage").glob("*.tmp"))


async def test_stored_bytes_are_the_resource(store: Store, tmp_path: Path,
                                             files: tuple[FileServer, str]) -> None:
    proc = await make_processor(store, tmp_path, request_headers={"X-Default": "d",
                                                                  "X-Over": "default"})
    try:
        job = await run_job(proc, files[1] + "/gzip",
                            request_headers={"Accept-Encoding": "gzip", "X-Over": "job"})
        job2 = await run_job(proc, files[1] + "/headers", request_headers={"X-Over": "job"})
    finally:
        await proc.client.close()
    assert job.download_state == job2.download_state == "Success"
    assert (tmp_path / "storage" / job.path()).read_bytes() == HTML
    seen = files[0].headers_seen[-1]
    assert seen["X-Default"] == "d" and seen["X-Over"] == "job"
