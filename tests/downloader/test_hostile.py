"""Hostile servers and hostile submitters (issue 11) through the real subcommands: every
case names the callback it must end in. Real redis, real HTTP(S) servers and proxies on
loopback; certificates made by openssl in the test."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import json
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
import redis
from aiohttp import web

from pazari.downloader.config import load, require_notifier, require_processor
from pazari.downloader.job import Aggregation, Job
from pazari.downloader.purge import asset_paths
from pazari.downloader.signing import Secrets, signature
from tests.support.ports import async_wait_for, free_port

from .conftest import ApiHandle
from .servers import HTML, Running
from .stack import Stack

pytestmark = pytest.mark.timeout(180)

METADATA = "http://169.254.169.254/latest/meta-data/"


# ------------------------------------------------------------------------- servers
class RawServer:
    """Answers each request with canned bytes chosen by its path (headers aiohttp would
    refuse to send: invalid UTF-8, broken IPv6 literals), then closes. An answer given as
    (fast, slow) sends ``slow`` a byte every 0.5 s after ``fast`` (slowloris)."""

    def __init__(self, answers: dict[str, bytes | tuple[bytes, bytes]]) -> None:
        self.answers = answers
        self.port = free_port()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            answer = self.answers.get(path, b"HTTP/1.1 404 Not Found\r\n"
                                            b"Content-Length: 0\r\n\r\n")
            fast, slow = answer if isinstance(answer, tuple) else (answer, b"")
            writer.write(fast)
            await writer.drain()
            for byte in slow:
                await asyncio.sleep(0.5)
                writer.write(bytes([byte]))
                await writer.drain()
        writer.close()


def redirect(location: bytes) -> bytes:
    return (b"HTTP/1.1 302 Found\r\nLocation: " + location
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@dataclass
class Seen:
    """A server that records the headers of every request, keyed by its X-Case header."""

    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            self.headers[request.headers.get("X-Case", "")] = {
                **request.headers, "X-Seen-Scheme": request.scheme}
            return web.Response(body=HTML, content_type="text/html")

        async def to(request: web.Request) -> web.Response:
            code = int(request.query.get("code", "302"))
            return web.Response(status=code, headers={"Location": request.query["u"]})

        app = web.Application()
        app.add_routes([web.get("/headers", record), web.route("*", "/to", to)])
        return app


class DualSite:
    """An aiohttp app on one port of several loopback addresses that speaks plain HTTP and
    TLS alike (the first byte of a connection tells them apart): a redirect can change
    only the scheme, or only the host, of a URL."""

    def __init__(self, app: web.Application, cert: Path, key: Path,
                 hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.2")) -> None:
        self.app = app
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.hosts = hosts
        self.port = free_port()
        self.runner = web.AppRunner(app, access_log=None)
        self.listeners: list[socket.socket] = []
        self.tasks: list[asyncio.Task[None]] = []

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        await self.runner.setup()
        for host in self.hosts:
            listener = socket.create_server((host, self.port))
            listener.setblocking(False)
            self.listeners.append(listener)
            self.tasks.append(asyncio.create_task(self._accept(listener)))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            task = asyncio.create_task(self._hand_over(conn))
            self.tasks.append(task)

    async def _hand_over(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(conn.fileno(), readable.set)
        try:
            await readable.wait()
        finally:
            loop.remove_reader(conn.fileno())
        try:
            tls = conn.recv(1, socket.MSG_PEEK) == b"\x16"  # a TLS handshake record
            server = self.runner.server
            assert server is not None
            await loop.connect_accepted_socket(server, conn, ssl=self.ctx if tls else None)
        except (OSError, ssl.SSLError):
            conn.close()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for listener in self.listeners:
            listener.close()
        await self.runner.cleanup()


def make_cert(tmp: Path, name: str, san: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for ``san`` (e.g. ``IP:127.0.0.1``)."""
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    f"/CN={name}", "-addext", f"subjectAltName={san}", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def tls_site(app: web.Application, cert: Path, key: Path) -> tuple[web.AppRunner, str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    return runner, f"https://127.0.0.1:{port}"


# ----------------------------------------------------------------------- downloads
@dataclass
class Case:
    """A job to post and the callback it must end in (``error`` a substring, "" for none)."""

    name: str
    url: str
    success: bool
    error: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    check: Callable[[], None] | None = None


async def run_cases(stack: Stack, cases: list[Case], timeout: float = 60) -> None:
    ids = {}
    for i, case in enumerate(cases):
        fields = {"aggr_id": f"h{i}", "max_retries": 0, **case.fields}
        ids[case.name] = await stack.post(case.url, **fields)
    await stack.receiver.wait_for_jobs(set(ids.values()), timeout=timeout)
    wrong = []
    for case in cases:
        got = stack.receiver.one(ids[case.name])
        if got["success"] != case.success or case.error not in got["error"]:
            wrong.append(f"{case.name}: success={got['success']} error={got['error']!r}")
        elif case.check is not None:
            try:
                case.check()
            except AssertionError as exc:
                wrong.append(f"{case.name}: {exc}")
    assert not wrong, "\n".join(wrong)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A raw server with poison heads, a second origin that records headers, and three
    HTTPS servers: trusted (SSL_CERT_FILE), wrong hostname, untrusted."""
    gzip_bomb = gzip.compress(b"\0" * (1 << 20), 9) * 2048  # 2 GiB decoded
    brotli_bomb = brotli.compress(b"\0" * (256 << 20), quality=1)
    raw = RawServer({
        "/gzip-bomb": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d"
                      b"\r\n\r\n%s" % (len(gzip_bomb), gzip_bomb),
        "/brotli-bomb": b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: %d"
                        b"\r\n\r\n%s" % (len(brotli_bomb), brotli_bomb),
        "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nonly this",
        "/1xx-flood": b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" * 20000,
        "/slow-head": (b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        "/slow-body": (b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", b"x" * 40),
        "/bad-utf8": redirect(b"/next/\xff\xfe\xfa"),
        "/bad-ipv6": redirect(b"http://[::1/x"),
        "/bad-port": redirect(b"http://127.0.0.1:99999/x"),
        "/to-file": redirect(b"file:///etc/passwd"),
        "/to-metadata": redirect(METADATA.encode()),
    })
    await raw.start()
    good_cert, good_key = make_cert(tmp_path, "good", "IP:127.0.0.1")
    other = Seen()
    other_site = DualSite(other.app(), good_cert, good_key)
    await other_site.start()
    wrong_cert, wrong_key = make_cert(tmp_path, "wrong", "DNS:elsewhere.example")
    untrusted_cert, untrusted_key = make_cert(tmp_path, "untrusted", "IP:127.0.0.1")

    async def page(_: web.Request) -> web.Response:
        return web.Response(body=HTML, content_type="text/html")

    async def down(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["u"])

    def tls_app() -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/page", page), web.get("/down", down)])
        return app

    runners = []
    urls = {}
    for name, (cert, key) in {"good": (good_cert, good_key),
                              "wrong": (wrong_cert, wrong_key),
                              "untrusted": (untrusted_cert, untrusted_key)}.items():
        runner, url = await tls_site(tls_app(), cert, key)
        runners.append(runner)
        urls[name] = url
    try:
        # The trust store: the good and the wrong-hostname certificates, not the third.
        bundle = tmp_path / "trusted.pem"
        bundle.write_bytes(good_cert.read_bytes() + wrong_cert.read_bytes())
        yield {"raw": raw, "other": other, "other_url": other_site.url(), "dual": other_site,
               "tls": urls, "ca": bundle}
    finally:
        for runner in runners:
            await runner.cleanup()
        await other_site.stop()
        await raw.stop()


async def test_hostile_downloads(stack: Stack, servers: dict[str, Any],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Private networks refused except loopback (allowed_networks), so the servers here
    are reachable and 169.254.169.254 is not; each job gets the callback its case names."""
    monkeypatch.setenv("SSL_CERT_FILE", str(servers["ca"]))
    await stack.start(processor={"allow_private_networks": False,
                                 "allowed_networks": ["127.0.0.1/32", "127.0.0.2/32"],
                                 "max_file_size": 16 << 20})
    # A working proxy at an address the guard does not allow: never to be dialled.
    private_proxy_dials: list[int] = []

    async def count_dial(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        private_proxy_dials.append(1)
        writer.close()

    pport = free_port()
    private_proxy = await asyncio.start_server(count_dial, "127.0.0.3", pport)
    r = redis.Redis(port=stack.redis.port)
    # An aggregation an older api let in: the processor cannot use its proxy.
    r.hset("aggr:socks", mapping={"ID": "socks", "Limit": "2",
                                  "Proxy": "socks5://127.0.0.1:1080", "ExpiresAt": ""})
    r.close()
    files, raw, other = stack.files, servers["raw"], servers["other"]
    files.files["page.html"] = (HTML, "text/html")
    tls = servers["tls"]
    creds = {"Authorization": "Bearer job-secret", "Cookie": "session=1",
             "Proxy-Authorization": "Basic eDp5", "X-Keep": "1"}

    def proxy_never_asked_for_metadata() -> None:
        assert not [p for p in files.proxied if "169.254" in p], files.proxied

    def proxy_was_used() -> None:
        assert "127.0.0.1/via-proxy" in files.proxied, files.proxied

    def upper_case_proxy_was_used() -> None:
        assert "127.0.0.1/via-upper-case" in files.proxied, files.proxied

    def credentials_dropped() -> None:
        seen = other.headers["cross"]
        assert seen["X-Keep"] == "1"
        assert not {"Authorization", "Cookie", "Proxy-Authorization"} & seen.keys(), seen

    def credentials_kept() -> None:
        seen = other.headers["same"]
        assert seen["Authorization"] == "Bearer job-secret" and seen["Cookie"] == "session=1"

    def dropped(case: str, scheme: str = "http") -> Callable[[], None]:
        def check() -> None:
            seen = other.headers[case]
            assert seen["X-Keep"] == "1" and seen["X-Seen-Scheme"] == scheme, seen
            assert not {"Authorization", "Cookie", "Proxy-Authorization"} & seen.keys(), seen
        return check

    def private_proxy_never_dialled() -> None:
        assert not private_proxy_dials

    dual = servers["dual"]

    cases = [
        Case("location-invalid-utf8", raw.url + "/bad-utf8", False,
             "not valid UTF-8, retriable: false"),
        Case("location-broken-ipv6", raw.url + "/bad-ipv6", False,
             "invalid Location header 'http://[::1/x'"),
        Case("location-bad-port", raw.url + "/bad-port", False, "invalid Location header"),
        Case("redirect-to-file-scheme", raw.url + "/to-file", False,
             'redirect to unsupported protocol scheme "file"'),
        Case("redirect-to-metadata", raw.url + "/to-metadata", False,
             "refusing to connect to 169.254.169.254"),
        Case("metadata-direct", METADATA, False, "refusing to connect to 169.254.169.254"),
        Case("metadata-through-aggr-proxy", METADATA, False,
             "refusing to connect to 169.254.169.254", {"aggr_proxy": stack.file_url},
             proxy_never_asked_for_metadata),
        Case("allowed-target-through-aggr-proxy", "http://127.0.0.1:1/via-proxy", True, "",
             {"aggr_proxy": stack.file_url}, proxy_was_used),
        Case("unusable-proxy-at-run-time", stack.file_url + "/file/page.html", False,
             'unsupported proxy scheme "socks5"', {"aggr_id": "socks"}),
        # The api takes HTTP:// (201); the processor downloads through it too.
        Case("upper-case-proxy-scheme-at-run-time", "http://127.0.0.1:1/via-upper-case", True,
             "", {"aggr_proxy": stack.file_url.replace("http://", "HTTP://")},
             upper_case_proxy_was_used),
        Case("endless-redirects", stack.file_url + "/loop/0", False,
             "stopped after 10 redirects, retriable: true"),
        Case("credentials-cross-origin-redirect",
             f"{stack.file_url}/to?u={servers['other_url']}/headers", True, "",
             {"request_headers": {**creds, "X-Case": "cross"}}, credentials_dropped),
        Case("credentials-same-origin-redirect",
             f"{servers['other_url']}/to?u=/headers", True, "",
             {"request_headers": {**creds, "X-Case": "same"}}, credentials_kept),
        # Only the host changes (127.0.0.1 -> 127.0.0.2, same scheme and port).
        Case("credentials-cross-host-redirect",
             f"{dual.url()}/to?u={dual.url(host='127.0.0.2')}/headers", True, "",
             {"request_headers": {**creds, "X-Case": "host"}}, dropped("host")),
        # Only the scheme changes (http -> https, same host and port).
        Case("credentials-scheme-upgrade-redirect",
             f"{dual.url()}/to?u={dual.url('https')}/headers", True, "",
             {"request_headers": {**creds, "X-Case": "scheme"}}, dropped("scheme", "https")),
        Case("proxy-at-private-address", stack.file_url + "/file/page.html", False,
             "refusing to connect to 127.0.0.3 (127.0.0.3): private, loopback or link-local "
             "address", {"aggr_proxy": f"http://127.0.0.3:{pport}"}, private_proxy_never_dialled),
        # The announced length is over max_file_size: refused at the head, before a byte
        # of the body is written; the bombs below are cut by the sink, on the decoded
        # bytes, as they stream ("downloading file").
        Case("announced-length-over-max-file-size", f"{stack.file_url}/big/{32 << 20}", False,
             "Error while processing response, Content-Length 33554432 exceeds the maximum "
             "file size of 16777216 bytes, retriable: false"),
        Case("gzip-bomb-2GiB", raw.url + "/gzip-bomb", False,
             "Error while downloading file, file exceeds the maximum size of 16777216 bytes, "
             "retriable: false"),
        Case("brotli-bomb-256MiB", raw.url + "/brotli-bomb", False,
             "Error while downloading file, file exceeds the maximum size of 16777216 bytes, "
             "retriable: false"),
        Case("lying-content-length", raw.url + "/short", False,
             "Error while downloading file, unexpected EOF, retriable: true"),
        Case("1xx-flood", raw.url + "/1xx-flood", False, "headers"),
        Case("slowloris-head", raw.url + "/slow-head", False,
             "context deadline exceeded (download_timeout 2s), retriable: true",
             {"download_timeout": 2}),
        Case("slowloris-body", raw.url + "/slow-body", False,
             "context deadline exceeded (download_timeout 2s), retriable: true",
             {"download_timeout": 2}),
        Case("tls-trusted", tls["good"] + "/page", True),
        Case("tls-redirect-https-to-http",
             f"{tls['good']}/down?u={stack.file_url}/file/page.html", False,
             "refusing redirect from https to http"),
        Case("tls-wrong-hostname", tls["wrong"] + "/page", False,
             "TLS Error occured"),
        Case("tls-untrusted-certificate", tls["untrusted"] + "/page", False,
             "TLS Error occured"),
    ]
    try:
        await run_cases(stack, cases)
    finally:
        private_proxy.close()
        await private_proxy.wait_closed()


class PacedBomb:
    """A 2 GiB-decoded gzip body (2,048 members of 1 MiB of zeros), sent 64 members (64 KiB
    that decode to 64 MiB) every 400 ms: at most 160 MiB/s decoded, so a cut at 256 MiB
    takes at least 1.6 s whatever the machine's speed, and each burst is enough to hold a
    loop for a long time if it were decoded in one go. Records when the request came and
    when the client hung up."""

    MEMBERS_PER_TICK = 64

    def __init__(self) -> None:
        self.member = gzip.compress(b"\0" * (1 << 20), 9)
        self.port = free_port()
        self.asked = asyncio.Event()
        self.closed_at: float | None = None
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            self.asked.set()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: "
                         b"application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                         % (len(self.member) * 2048))
            tick = self.member * self.MEMBERS_PER_TICK
            for _ in range(2048 // self.MEMBERS_PER_TICK):
                writer.write(tick)
                await writer.drain()
                await asyncio.sleep(0.4)
            await reader.read()  # until the client hangs up
        self.closed_at = loop.time()
        writer.close()


def loop_thread_cpu(pid: int) -> float:
    """Seconds of CPU a process's main thread (its event loop's) has run
    (/proc/<pid>/task/<pid>/schedstat, in ns)."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


@dataclass
class LagProbe:
    """A thread that GETs a daemon's /debug/vars (served on its event loop) every 5 ms over
    one keep-alive connection. For each request: the wall time to the answer, and the CPU
    time the daemon's loop thread ran meanwhile, which bounds the longest callback that
    held the answer up (every callback run in that span is in it, the answer's own
    handling too) without counting the time the OS gave other processes."""

    port: int
    pid: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self.stop.wait(0.005):
                started, cpu = time.monotonic(), loop_thread_cpu(self.pid)
                conn.request("GET", "/debug/vars")
                conn.getresponse().read()
                self.cpu.append(loop_thread_cpu(self.pid) - cpu)
                self.wall.append(time.monotonic() - started)
        finally:
            conn.close()

    def __enter__(self) -> LagProbe:
        self.thread = threading.Thread(target=self._run, name="loop-lag-probe")
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join()

    def summary(self) -> str:
        wall, cpu = sorted(self.wall), sorted(self.cpu)
        return (f"{len(wall)} probes; loop-thread CPU worst {cpu[-1] * 1000:.1f} ms, "
                f"median {cpu[len(cpu) // 2] * 1000:.1f} ms; wall worst "
                f"{wall[-1] * 1000:.1f} ms, median {wall[len(wall) // 2] * 1000:.1f} ms")


async def test_gzip_bomb_cut_while_another_aggregation_completes(stack: Stack) -> None:
    """issue 11: a 2 GiB-decoded gzip bomb cut by max_file_size (256 MiB) fails with its
    callback, and a job of another aggregation, posted once the bomb's download has begun,
    is downloaded and called back while the bomb is still streaming: decoding and writing
    run in bounded slices, never holding the loop for the whole body.

    The loop-lag probe (LagProbe) runs for 1 s before the bomb (the machine's load alone)
    and during it; both are printed. The gate is the issue's 50 ms on the loop thread's CPU
    time: the wall time also counts the OS running other processes on the 2 shared cores
    (hundreds of ms under a loaded make test), so it is reported, not gated."""
    bomb = PacedBomb()
    await bomb.start()
    try:
        await stack.start(processor={"max_file_size": 256 << 20})
        stack.files.files["p.html"] = (HTML, "text/html")
        port, pid = stack.metrics_ports["processor"], stack.daemons["processor"].pid
        with LagProbe(port, pid) as idle:
            await asyncio.sleep(1)
        bomb_id = await stack.post(f"http://127.0.0.1:{bomb.port}/bomb", aggr_id="bomb",
                                   max_retries=0)
        await asyncio.wait_for(bomb.asked.wait(), 30)
        with LagProbe(port, pid) as during:
            other_id = await stack.post(f"{stack.file_url}/file/p.html?a=other",
                                        aggr_id="other")
            await stack.receiver.wait_for_jobs({other_id}, timeout=30)
            # The other aggregation's job is done; the bomb is still being downloaded.
            still_streaming = bomb.closed_at is None
            await stack.receiver.wait_for_jobs({bomb_id}, timeout=60)
    finally:
        await bomb.stop()
    assert stack.receiver.one(other_id)["success"]
    got = stack.receiver.one(bomb_id)
    assert not got["success"]
    assert got["error"] == ("Error while downloading file, file exceeds the maximum size of "
                            "268435456 bytes, retriable: false, internal: false")
    assert still_streaming, "the bomb's download ended before the other job was called back"
    print(f"processor loop, idle: {idle.summary()}")
    print(f"processor loop, during the bomb: {during.summary()}")
    assert max(during.cpu) <= 0.05, f"the processor's loop stalled: {during.summary()}"


async def test_insecure_redirect_allowed_when_configured(
        stack: Stack, servers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """processor.allow_insecure_redirects and notifier.allow_insecure_redirects: an https
    -> http hop is followed, without the job's credentials (the scheme changed)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(servers["ca"]))
    await stack.start(processor={"allow_insecure_redirects": True},
                      notifier={"allow_insecure_redirects": True})
    stack.files.files["page.html"] = (HTML, "text/html")
    dual, other = servers["dual"], servers["other"]
    creds = {"Authorization": "Bearer job-secret", "Cookie": "session=1", "X-Keep": "1"}

    def credentials_dropped() -> None:
        seen = other.headers["downgrade"]
        assert seen["X-Seen-Scheme"] == "http" and seen["X-Keep"] == "1", seen
        assert not {"Authorization", "Cookie"} & seen.keys(), seen

    await run_cases(stack, [
        Case("tls-redirect-https-to-http-allowed",
             f"{servers['tls']['good']}/down?u={stack.file_url}/file/page.html", True),
        # Only the scheme changes (https -> http, same host and port).
        Case("tls-downgrade-drops-credentials", f"{dual.url('https')}/to?u={dual.url()}/headers",
             True, "", {"request_headers": {**creds, "X-Case": "downgrade"}},
             credentials_dropped),
        # The callback itself is redirected https -> http (307 keeps the POST).
        Case("callback-https-to-http-allowed", f"{stack.file_url}/file/page.html", True, "",
             {"callback_url": f"{dual.url('https')}/to?code=307&u={stack.receiver.url}"}),
    ])


async def test_metadata_through_env_proxy(stack: Stack, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """HTTP_PROXY from the environment: the target is checked as with aggr_proxy."""
    port = free_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    proxied: list[str] = []

    async def as_proxy(request: web.Request) -> web.Response:
        proxied.append(f"{request.host}{request.path}")
        return web.Response(body=HTML, content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/{tail:.*}", as_proxy)])
    proxy = Running(app, port)
    await proxy.start()
    try:
        await stack.start(processor={"allow_private_networks": False,
                                     "allowed_networks": ["127.0.0.0/8"]})
        await run_cases(stack, [
            Case("metadata-through-env-proxy", METADATA, False,
                 "refusing to connect to 169.254.169.254"),
            Case("allowed-target-through-env-proxy", "http://127.0.0.2:1/x", True),
        ])
    finally:
        await proxy.stop()
    assert proxied == ["127.0.0.2/x"]


# ---------------------------------------------------------------------- callbacks
async def test_hostile_callback_receivers(stack: Stack, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The notifier's guard (allowed: 127.0.0.1 only) on every hop: redirects followed as
    Go's client.Post (307/308 repeat the POST, 301/302/303 become a GET), at most
    max_redirects of them, https -> http refused, inward hops and private receivers
    refused."""
    cert, key = make_cert(tmp_path, "cb", "IP:127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    dual = DualSite(Seen().app(), cert, key, hosts=("127.0.0.1",))
    await dual.start()
    got_get: list[str] = []
    private_hits: list[str] = []

    async def hop(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        target = request.query["u"]
        return web.Response(status=code, headers={"Location": target})

    async def landing(request: web.Request) -> web.Response:
        got_get.append(request.method)
        return web.Response(text="ok")

    async def private(request: web.Request) -> web.Response:
        private_hits.append(request.path)
        return web.Response(text="ok")

    async def loop(_request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/loop"})

    app = web.Application()
    app.add_routes([web.route("*", "/hop/{code}", hop), web.get("/landing", landing),
                    web.route("*", "/loop", loop)])
    redirector = Running(app)
    await redirector.start()
    papp = web.Application()
    papp.add_routes([web.route("*", "/{tail:.*}", private)])
    prunner = web.AppRunner(papp, access_log=None)
    await prunner.setup()
    pport = free_port()
    await web.TCPSite(prunner, "127.0.0.2", pport).start()
    try:
        await stack.start(notifier={"allow_private_networks": False,
                                    "allowed_networks": ["127.0.0.1/32"],
                                    "max_attempts": 1})
        stack.files.files["p.html"] = (HTML, "text/html")
        cb = stack.receiver.url
        base = redirector.url
        cases = {
            "receiver-allowed": (cb, "delivered"),
            "redirect-307-keeps-post": (f"{base}/hop/307?u={cb}", "delivered"),
            "redirect-308-keeps-post": (f"{base}/hop/308?u={cb}", "delivered"),
            "redirect-303-becomes-get": (f"{base}/hop/303?u={base}/landing", "delivered"),
            "redirect-301-becomes-get": (f"{base}/hop/301?u={base}/landing", "delivered"),
            "endless-redirects": (f"{base}/loop", "stopped after 10 redirects"),
            "redirect-https-to-http": (f"{dual.url('https')}/to?code=307&u={cb}",
                                       "refusing redirect from https to http"),
            "redirect-inward-metadata": (f"{base}/hop/302?u=http://169.254.169.254/cb",
                                         "refusing to connect to 169.254.169.254"),
            "redirect-inward-private": (f"{base}/hop/307?u=http://127.0.0.2:{pport}/x",
                                        "refusing to connect to 127.0.0.2"),
            "receiver-private": (f"http://127.0.0.2:{pport}/cb",
                                 "refusing to connect to 127.0.0.2"),
            "receiver-redirect-chain-ends-404": (f"{base}/hop/302?u={base}/hop/302%3Fu%3D/x",
                                       "Received Status: 404"),
        }
        ids = {name: await stack.post(f"{stack.file_url}/file/p.html", aggr_id="cb",
                                      callback_url=url)
               for name, (url, _) in cases.items()}
        r = redis.Redis(port=stack.redis.port, decode_responses=True)
        try:
            def settled() -> bool:
                for name, (_, outcome) in cases.items():
                    if outcome == "delivered":
                        if r.exists(f"job:{ids[name]}"):
                            return False
                    elif r.hget(f"job:{ids[name]}", "CallbackState") != "Failed":
                        return False
                return True

            await async_wait_for(settled, 60, "every callback to settle")
            wrong = []
            for name, (_, outcome) in cases.items():
                if outcome == "delivered":
                    continue
                meta = r.hget(f"job:{ids[name]}", "CallbackMeta") or ""
                if outcome not in meta:
                    wrong.append(f"{name}: {meta!r}")
            assert not wrong, "\n".join(wrong)
        finally:
            r.close()
        delivered_posts = {ids["receiver-allowed"], ids["redirect-307-keeps-post"],
                           ids["redirect-308-keeps-post"]}
        assert delivered_posts <= stack.receiver.by_job.keys()
        assert got_get == ["GET", "GET"]
        assert private_hits == []
        assert ids["redirect-https-to-http"] not in stack.receiver.by_job
    finally:
        await prunner.cleanup()
        await redirector.stop()
        await dual.stop()


async def test_callback_metadata_through_env_proxy(stack: Stack,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY for the notifier: the proxy (allowed) is dialled, so the callback's own
    target is checked before the request goes out. 169.254.169.254 is refused and never
    asked of the proxy; an allowed target goes through the proxy."""
    port = free_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    proxied: list[str] = []

    async def as_proxy(request: web.Request) -> web.Response:
        proxied.append(f"{request.method} {request.headers['Host']}{request.path}")
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.route("*", "/{tail:.*}", as_proxy)])
    proxy = Running(app, port)
    await proxy.start()
    try:
        await stack.start(notifier={"allow_private_networks": False, "max_attempts": 1,
                                    "allowed_networks": ["127.0.0.1/32", "127.0.0.2/32"]})
        stack.files.files["p.html"] = (HTML, "text/html")
        url = f"{stack.file_url}/file/p.html"
        metadata = await stack.post(url, aggr_id="envcb", callback_url=METADATA)
        allowed = await stack.post(url, aggr_id="envcb", callback_url="http://127.0.0.2:1/cb")
        r = redis.Redis(port=stack.redis.port, decode_responses=True)
        try:
            await async_wait_for(
                lambda: r.hget(f"job:{metadata}", "CallbackState") == "Failed"
                and not r.exists(f"job:{allowed}"), 60, "both callbacks to settle")
            meta = r.hget(f"job:{metadata}", "CallbackMeta") or ""
        finally:
            r.close()
    finally:
        await proxy.stop()
    assert "refusing to connect to 169.254.169.254" in meta, meta
    assert proxied == ["POST 127.0.0.2:1/cb"]


# ------------------------------------------------------------- crashes and faults
@pytest.mark.slow
async def test_job_seen_again_after_crashes_fails(stack: Stack) -> None:
    """A job whose processors keep dying: reclaimed from a dead lease more than
    max_reclaims times, it fails with a callback instead of being retried forever. The
    count is seeded at max_reclaims, then one real kill -9 takes it over."""
    await stack.start(processor={"max_reclaims": 3, "inflight_lease": 2})
    stack.files.files["slow"] = (HTML, "text/html")
    job_id = await stack.post(f"{stack.file_url}/file/slow?a=crash&delay=60", aggr_id="crash",
                              max_retries=5)
    await async_wait_for(lambda: stack.files.current["crash"] == 1, 30, "the download")
    r = redis.Redis(port=stack.redis.port, decode_responses=True)
    try:
        r.hset(f"job:{job_id}", "ReclaimCount", "3")
        stack.daemons["processor"].kill9()
        await stack.start_component("processor")
        await stack.receiver.wait_for_jobs({job_id}, timeout=60)
    finally:
        r.close()
    got = stack.receiver.one(job_id)
    assert not got["success"]
    assert "processor crashed while handling this job, retriable: false" in got["error"]


async def test_unexpected_exception_fails_the_job_with_a_callback(stack: Stack) -> None:
    """The same through the real processor and notifier: a job an older client wrote with a
    request header whose value is a number (the api refuses it: 400) makes the transport's
    header check raise TypeError; the job still ends with a callback naming the error."""
    from pazari.downloader.redisconn import connect
    from pazari.downloader.store import Store

    await stack.start(components=("processor", "notifier"))
    stack.files.files["p.html"] = (HTML, "text/html")
    client = connect(stack.redis.url, "test")
    try:
        job = Job(id="NumberHeader01", url=f"{stack.file_url}/file/p.html", aggr_id="num",
                  callback_url=stack.receiver.url, callback_type="http",
                  callback_dst=stack.receiver.url, max_retries=3,
                  request_headers={"X-Number": 5})  # type: ignore[dict-item]
        await Store(client).enqueue(job, Aggregation("num", 1))
    finally:
        await client.aclose()
    await stack.receiver.wait_for_jobs({job.id}, timeout=60)
    got = stack.receiver.one(job.id)
    assert not got["success"]
    assert got["error"] == ("Error while handling job, TypeError: argument of type 'int' is "
                            "not iterable, retriable: false, internal: false")
    assert len(stack.receiver.by_job[job.id]) == 1


async def test_unexpected_exception_fails_the_job(stack: Stack) -> None:
    """Fault injection: a processor whose transport raises something nobody anticipated
    still ends the job with a callback naming the error (no unhandled task exception,
    no endless reclaim)."""
    from pazari.downloader.config import Config, ProcessorConfig
    from pazari.downloader.processor import Processor
    from pazari.downloader.redisconn import connect
    from pazari.downloader.stats import Stats
    from pazari.downloader.storage import FileStorage
    from pazari.downloader.store import Store

    class Exploding:
        async def request(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("transport blew up")

        async def close(self) -> None:
            pass

    storage = stack.tmp / "st"
    storage.mkdir()
    client = connect(stack.redis.url, "test")
    store = Store(client)
    pcfg = ProcessorConfig(storage_dir=str(storage), download_url="http://localhost/a",
                           allow_private_networks=True)
    proc = Processor(Config(processor=pcfg), store, Exploding(),  # type: ignore[arg-type]
                     FileStorage(str(storage), str(storage)), Stats("processor"))
    try:
        job = Job(id="Jexplode000001", url="http://127.0.0.1:1/x", aggr_id="boom",
                  callback_url="http://127.0.0.1:9/cb", max_retries=3)
        await store.enqueue(job, Aggregation("boom", 1))
        [popped] = await store.pop_downloads("boom", 1, 30)
        await proc.perform(popped, Aggregation("boom", 1))
        done = await store.get_job(job.id)
    finally:
        proc.file_threads.shutdown()
        os.close(proc.fs_fd)
        await client.aclose()
    assert done is not None
    assert done.download_state == "Failed" and done.callback_state == "Pending"
    assert done.download_meta == ("Error while handling job, RuntimeError: transport blew up, "
                                  "retriable: false, internal: false")


# ------------------------------------------------------------------ submitters
PROXIES: list[tuple[str, str, int, str]] = [
    ("socks5", "socks5://127.0.0.1:1080", 400, 'unsupported proxy scheme "socks5"'),
    ("bare-path", "/var/run/proxy", 400, "no scheme"),
    ("no-host", "http://", 400, "no host"),
    ("with-path", "http://127.0.0.1:3128/x", 400, "no path, query or fragment"),
    ("bad-ipv6", "http://[::1:3128", 400, "Aggregation proxy"),
    ("upper-case-scheme", "HTTP://127.0.0.1:3128", 201, ""),
    ("https-proxy", "https://proxy.example:443", 201, ""),
]


@pytest.mark.parametrize(("proxy", "status", "message"), [p[1:] for p in PROXIES],
                         ids=[p[0] for p in PROXIES])
async def test_api_refuses_unusable_proxies(api: ApiHandle, proxy: str, status: int,
                                            message: str) -> None:
    """The api parses aggr_proxy with the processor's parser: unusable is a 400 naming
    the reason, not an aggregation stuck Pending."""
    got, text = await api.post("/download", {
        "url": "http://example.com/a", "aggr_id": f"p-{proxy}", "aggr_limit": 1,
        "callback_url": "http://cb.example/x", "aggr_proxy": proxy})
    assert got == status, text
    assert message in text


SECRETS = {"https://partner.example.com": "origin", "https://partner.example.com/hooks/": "hooks",
           "http://partner.example.com:8080": "port", "topic-a": "kafka"}
DESTINATIONS: list[tuple[str, str, str | None]] = [
    ("exact-origin", "https://partner.example.com/cb", "origin"),
    ("default-port-spelled", "https://partner.example.com:443/cb", "origin"),
    ("path-prefix", "https://partner.example.com/hooks/x", "hooks"),
    ("path-prefix-exact", "https://partner.example.com/hooks", "hooks"),
    ("path-not-at-boundary", "https://partner.example.com/hooksx", "origin"),
    ("longer-host", "https://partner.example.com.evil.net/", None),
    ("userinfo-trick", "https://partner.example.com@evil.net/", None),
    ("other-scheme", "http://partner.example.com/cb", None),
    ("other-port", "https://partner.example.com:8443/cb", None),
    ("explicit-port", "http://partner.example.com:8080/", "port"),
    ("case-insensitive-host", "https://PARTNER.example.com/cb", "origin"),
    ("kafka-topic", "topic-a", "kafka"),
    ("kafka-topic-prefix", "topic-ab", None),
]


@pytest.mark.parametrize(("dst", "secret"), [d[1:] for d in DESTINATIONS],
                         ids=[d[0] for d in DESTINATIONS])
def test_signing_secret_by_exact_origin(dst: str, secret: str | None) -> None:
    assert Secrets(SECRETS).for_destination(dst) == secret


def test_signature_covers_the_timestamp() -> None:
    body = b'{"job_id":"x"}'
    assert signature("k", 1700000000, body) != signature("k", 1700000001, body)
    assert signature("k", 1, body).startswith("sha256=")


PURGE_LINES: list[tuple[str, str, bool]] = [
    ("combined-200", '1.2.3.4 - - [04/Dec/2026:01:00:00 +0000] '
     '"GET /assets/6QE/6QEywYsd0jrKAg HTTP/1.1" 200 1 "-" "curl"', True),
    ("user-agent-traversal", '1.2.3.4 - - [04/Dec/2026:01:00:00 +0000] '
     '"GET /x HTTP/1.1" 404 1 "-" "GET /assets/../victim HTTP/1.1 200 "', False),
    ("request-traversal", '1.2.3.4 - - [04/Dec/2026:01:00:00 +0000] '
     '"GET /assets/../victim HTTP/1.1" 200 1 "-" "curl"', False),
    ("request-deep-traversal", '1.2.3.4 - - [04/Dec/2026:01:00:00 +0000] '
     '"GET /assets/6QE/../../victim HTTP/1.1" 200 1 "-" "curl"', False),
    ("not-at-line-start", 'junk 1.2.3.4 - - [x] "GET /assets/6QE/6QEywYsd0jrKAg HTTP/1.1" '
     '200 1 "-" "curl"', False),
    ("status-404", '1.2.3.4 - - [x] "GET /assets/6QE/6QEywYsd0jrKAg HTTP/1.1" 404 1 "-" "c"',
     False),
    ("referer-says-200", '1.2.3.4 - - [x] "GET /assets/6QE/6QEywYsd0jrKAg HTTP/1.1" 404 1 '
     '"GET /assets/6QE/6QEywYsd0jrKAg HTTP/1.1 200 " "c"', False),
    ("symlink-out", '1.2.3.4 - - [x] "GET /assets/lnk/victim HTTP/1.1" 200 1 "-" "c"', False),
]


@pytest.mark.parametrize(("line", "named"), [p[1:] for p in PURGE_LINES],
                         ids=[p[0] for p in PURGE_LINES])
def test_purge_assets_stays_in_the_storage_root(tmp_path: Path, line: str, named: bool
                                                ) -> None:
    root = tmp_path / "assets"
    (root / "6QE").mkdir(parents=True)
    (root / "6QE" / "6QEywYsd0jrKAg").write_bytes(b"x")
    (tmp_path / "victim").write_bytes(b"keep me")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_bytes(b"keep me too")
    (root / "lnk").symlink_to(tmp_path / "outside")
    got = list(asset_paths([line], str(root)))
    assert got == ([f"{root}/6QE/6QEywYsd0jrKAg"] if named else [])


# The keys and values of the original's config.json.sample (github.com/skroutz/downloader).
ORIGINAL_SAMPLE = {
    "redis": {"addr": "127.0.0.1:6379"},
    "api": {"heartbeat_path": "/tmp/disable_api"},
    "processor": {"filestorage": {"type": "filesystem", "rootdir": "/tmp/"},
                  "storage_dir": "/tmp/",
                  "request_headers": {"Accept": "*/*", "User-Agent": "Downloader v1"},
                  "stats_interval": 5000},
    "notifier": {"download_url": "http://localhost/foo", "concurrency": 10,
                 "stats_interval": 5000, "deletion_interval": 180},
    "backends": {"http": {"timeout": 30},
                 "kafka": {"bootstrap.servers": "localhost:9092", "api.version.request": True,
                           "log.connection.close": False, "go.delivery.reports": True,
                           "message.send.max.retries": 3, "request.required.acks": -1}},
}


def test_original_config_sample_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                      ) -> None:
    path = tmp_path / "config.json.sample"
    path.write_text(json.dumps(ORIGINAL_SAMPLE, indent=2))
    with caplog.at_level(logging.WARNING):
        cfg = load(str(path))
    assert require_processor(cfg) is None
    assert require_notifier(cfg) is None
    assert cfg.processor.download_url == "http://localhost/foo"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "$.notifier.download_url" in warnings[0], warnings


@pytest.mark.parametrize("command", ["api", "processor", "notifier"])
def test_original_config_sample_starts_subcommands(tmp_path: Path, command: str) -> None:
    """Each subcommand gets past its config checks with the sample (the redis address
    points at a closed port, so the daemon stops at its first connection instead)."""
    from .conftest import DOWNLOADER_BIN

    sample = json.loads(json.dumps(ORIGINAL_SAMPLE))
    sample["redis"]["addr"] = f"127.0.0.1:{free_port()}"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(sample))
    argv = [DOWNLOADER_BIN, command, "-c", str(path)]
    if command == "api":
        argv += ["--host", "127.0.0.1", "-p", str(free_port())]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=8)
        stderr = out.stderr
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (
            exc.stderr or "")
    assert "config error" not in stderr, stderr
    assert stderr.count("ignoring keys the original ignored") == 1, stderr


@pytest.mark.parametrize(("change", "message"), [
    ({"processor": {"no_such_key": 1}}, "$.processor.no_such_key: unknown key"),
    ({"notifier": {"signing_secrets": {"https://u@partner.example": "k"}}},
     "no userinfo"),
    ({"notifier": {"allowed_networks": ["10.0.0.0/33"]}}, "allowed_networks[0]"),
    ({"processor": {"max_retry_after": -1}}, "$.processor.max_retry_after: must not be negative"),
])
def test_config_still_refuses_unknown_and_bad_keys(tmp_path: Path, change: dict[str, Any],
                                                   message: str) -> None:
    from pazari.runtime.config import ConfigError

    sample = json.loads(json.dumps(ORIGINAL_SAMPLE))
    for section, values in change.items():
        sample[section].update(values)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(sample))
    with pytest.raises(ConfigError) as exc:
        load(str(path))
    assert message in str(exc.value)



# ---------------------------------------------------------------------- Retry-After
async def test_retry_after_holds_the_job_and_its_aggregation(stack: Stack) -> None:
    """A 503 (or 429) with Retry-After: 3: the job's retry, and the next job of the same
    aggregation, wait at least that long (the test config's backoff is 0.2 s). A
    Retry-After of a day is capped by processor.max_retry_after (5 s here)."""
    hits: dict[str, list[float]] = {}

    async def busy(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        hits.setdefault(key, []).append(asyncio.get_running_loop().time())
        if len(hits[key]) == 1 and key.startswith("busy"):
            status = 429 if key.endswith("429") else 503
            wait = "86400" if key == "busy-day" else "3"
            return web.Response(status=status, headers={"Retry-After": wait}, text="later")
        return web.Response(body=HTML, content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/r/{key}", busy)])
    server = Running(app)
    await server.start()
    try:
        await stack.start(processor={"max_retry_after": 5})
        first = await stack.post(f"{server.url}/r/busy503", aggr_id="ra", aggr_limit=1,
                                 max_retries=1)
        await async_wait_for(lambda: "busy503" in hits, 30, "the first attempt")
        second = await stack.post(f"{server.url}/r/next", aggr_id="ra", aggr_limit=1)
        other = await stack.post(f"{server.url}/r/busy429", aggr_id="rb", max_retries=1)
        capped = await stack.post(f"{server.url}/r/busy-day", aggr_id="rc", max_retries=1)
        await stack.receiver.wait_for_jobs({first, second, other, capped}, timeout=60)
    finally:
        await server.stop()
    assert stack.receiver.one(first)["success"] and stack.receiver.one(other)["success"]
    assert stack.receiver.one(capped)["success"]
    assert 4.5 <= hits["busy-day"][1] - hits["busy-day"][0] < 20, hits
    t0 = hits["busy503"][0]
    assert hits["busy503"][1] - t0 >= 2.5, hits
    assert hits["next"][0] - t0 >= 2.5, hits
    assert hits["busy429"][1] - hits["busy429"][0] >= 2.5, hits


NOW = 1_700_000_000.0


@pytest.mark.parametrize(("value", "seconds"), [
    ("3", 3.0), ("0", 0.0), ("", None), ("soon", None), ("-1", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no wait
    ("Sun, 06 Nov 2050 08:49:37 GMT", 2551337377.0 - NOW),
    ("Sun, 06 Nov 2050 08:49:37", None),  # no zone: not an HTTP-date
])
def test_parse_retry_after(value: str, seconds: float | None) -> None:
    from pazari.downloader.fetch import parse_retry_after

    assert parse_retry_after(value, now=NOW) == seconds



# --------------------------------------------------------------------------------- S3
@pytest.fixture
def moto_s3(daemon_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """moto's standalone S3 server on loopback; the AWS SDK pointed at it for every
    process this test starts."""
    import sys

    import boto3  # type: ignore[import-untyped]

    port = free_port()
    moto = str(Path(sys.executable).parent / "moto_server")
    url = f"http://127.0.0.1:{port}"
    daemon_factory([moto, "-H", "127.0.0.1", "-p", str(port)], ready="http",
                   health_url=url + "/moto-api/")
    for key, value in {"AWS_ENDPOINT_URL_S3": url, "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "eu-west-1",
                       "NO_PROXY": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", region_name="eu-west-1", endpoint_url=url)
    client.create_bucket(Bucket="caller-bucket",
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


async def test_per_job_s3_bucket(stack: Stack, moto_s3: Any) -> None:
    """spec §3 step 10: the file goes to the caller's bucket under <id[0:3]>/<id>, extra's
    strings and numbers as metadata; a bad extra or a missing bucket fail the job with a
    callback naming why."""
    await stack.start()
    stack.files.files["page.html"] = (HTML, "text/html")
    stack.files.files["big.bin"] = (b"\x01" * (300 << 10), "application/octet-stream")
    url = stack.file_url + "/file/page.html"
    ok = await stack.post(url, aggr_id="s3", s3_bucket="caller-bucket", s3_region="eu-west-1",
                          extra='{"owner": "shop-7", "n": 3.9, "skip": [1]}')
    streamed = await stack.post(stack.file_url + "/file/big.bin", aggr_id="s3",
                                s3_bucket="caller-bucket", s3_region="eu-west-1")
    bad_extra = await stack.post(url, aggr_id="s3", s3_bucket="caller-bucket",
                                 s3_region="eu-west-1", extra="not json")
    no_bucket = await stack.post(url, aggr_id="s3", s3_bucket="nobody-bucket",
                                 s3_region="eu-west-1", max_retries=0)
    await stack.receiver.wait_for_jobs({ok, streamed, bad_extra, no_bucket}, timeout=60)
    assert stack.receiver.one(ok)["success"] and stack.receiver.one(streamed)["success"]
    obj = moto_s3.get_object(Bucket="caller-bucket", Key=f"{ok[:3]}/{ok}")
    assert obj["Body"].read() == HTML
    assert obj["Metadata"] == {"owner": "shop-7", "n": "3"}
    big = moto_s3.get_object(Bucket="caller-bucket", Key=f"{streamed[:3]}/{streamed}")
    assert big["Body"].read() == b"\x01" * (300 << 10)
    assert "Could not unmarhal Extra" in stack.receiver.one(bad_extra)["error"]
    missing = stack.receiver.one(no_bucket)["error"]
    assert missing.startswith("Error while storing file to job specified AWS S3 bucket")
    assert "NoSuchBucket" in missing and missing.endswith("retriable: false, internal: false")
    assert not list(stack.storage.rglob(f"{ok}*"))  # nothing kept locally


async def test_s3_file_storage(stack: Stack, moto_s3: Any) -> None:
    """filestorage.type "s3": stored files go to the configured bucket, and the reaper
    deletes the object once the deletion interval is over."""
    await stack.start(processor={"filestorage": {"type": "s3", "bucket": "caller-bucket",
                                                 "region": "eu-west-1"}})
    stack.files.files["page.html"] = (HTML, "text/html")
    job_id = await stack.post(stack.file_url + "/file/page.html", aggr_id="fs3")
    await stack.receiver.wait_for_jobs({job_id}, timeout=60)
    assert stack.receiver.one(job_id)["success"]
    key = f"{job_id[:3]}/{job_id}"
    assert moto_s3.get_object(Bucket="caller-bucket", Key=key)["Body"].read() == HTML
    r = redis.Redis(port=stack.redis.port)
    try:
        await async_wait_for(lambda: r.zscore("JobDeletionQueue", job_id) is not None, 20,
                             "the deletion schedule")
        r.zadd("JobDeletionQueue", {job_id: 0})  # due now
        await async_wait_for(lambda: r.zscore("JobDeletionQueue", job_id) is None, 20,
                             "the reaper")
    finally:
        r.close()
    listed = moto_s3.list_objects_v2(Bucket="caller-bucket", Prefix=key)
    assert listed.get("KeyCount", 0) == 0
