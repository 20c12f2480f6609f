"""One download: GET with redirects followed by hand (limit, SSRF check per hop), the body
streamed to the temp file with size and time limits (spec §3 download, limitations 3, 10).

The first 1 KiB is handed to ``on_head`` as soon as it is complete (or at EOF), so a MIME
mismatch stops the transfer early, as the original's tee did.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict

from pazari.downloader.errors import DownloadError
from pazari.downloader.ssrf import ForbiddenAddress, Networks, check_host
from pazari.mime import SNIFF_LEN

REDIRECTS = frozenset((301, 302, 303, 307, 308))
CHUNK = 64 * 1024
#: A body announced at most this long (and not content-encoded, so it cannot inflate) is
#: read into memory and written, synced and renamed by one worker-thread hop; longer or
#: unannounced bodies stream to the temp file.
SMALL_BODY = 64 * 1024


@dataclass(frozen=True)
class Limits:
    timeout: float  # overall, body included; exceeding it is not retriable
    job_timeout: float  # the job's download_timeout (0 = none); retriable like the original
    max_size: int
    max_redirects: int
    allow_private: bool
    allowed: Networks = ()


@dataclass
class Result:
    status: int
    head: bytes
    size: int
    fd: int  # the temp file, still open: the caller fsyncs and closes it off the loop
    body: bytes | None = None  # a small body, not yet on disk (then fd is -1)


def _tls_error(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return True
    # The original matched "x509"/"tls" in the error text (spec §3 step 4).
    text = str(exc).lower()
    return "x509" in text or "certificate verify failed" in text or "[ssl" in text


def _proxy(proxy: str) -> str | None:
    return proxy or None


async def fetch(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                proxy: str, limits: Limits, tmp_path: str,
                on_head: Callable[[bytes], None], on_status: Callable[[int], None]) -> Result:
    """Download ``url`` into ``tmp_path``; raise DownloadError (phase, retriable) on failure.
    ``on_status`` sees every final status code before it is judged."""
    deadline = limits.timeout
    job_bound = 0 < limits.job_timeout < deadline
    try:
        async with asyncio.timeout(limits.job_timeout if job_bound else deadline):
            return await _fetch(session, url, headers, proxy, limits, tmp_path, on_head,
                                on_status)
    except TimeoutError:
        if job_bound:
            raise DownloadError(
                "performing request",
                f"context deadline exceeded (download_timeout {limits.job_timeout:g}s)",
                retriable=True) from None
        raise DownloadError(
            "downloading file", f"download did not finish within the {deadline:g}s limit",
            retriable=False) from None


async def _fetch(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                 proxy: str, limits: Limits, tmp_path: str,
                 on_head: Callable[[bytes], None], on_status: Callable[[int], None]) -> Result:
    current = url
    for _hop in range(limits.max_redirects + 1):
        resp = await _request(session, current, headers, proxy, limits)
        location = resp.headers.get("Location")
        if resp.status in REDIRECTS and location:
            resp.release()
            current = urljoin(current, location)
            continue
        try:
            return await _read(resp, limits, tmp_path, on_head, on_status)
        finally:
            resp.release()
    raise DownloadError("performing request",
                        f'Get "{url}": stopped after {limits.max_redirects} redirects',
                        retriable=False)


async def _request(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                   proxy: str, limits: Limits) -> aiohttp.ClientResponse:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DownloadError("performing request",
                            f'Get "{url}": unsupported protocol scheme "{parts.scheme}"',
                            retriable=True)
    try:
        if not limits.allow_private and not proxy and parts.hostname:
            await check_host(parts.hostname, parts.port or 0, limits.allowed)
        return await session.get(url, headers=CIMultiDict(headers), proxy=_proxy(proxy),
                                 allow_redirects=False)
    except ForbiddenAddress as exc:
        raise DownloadError("performing request", f'Get "{url}": {exc}',
                            retriable=False, stat="download.response.ssrf") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        if isinstance(cause, ForbiddenAddress):
            raise DownloadError("performing request", f'Get "{url}": {cause}',
                                retriable=False, stat="download.response.ssrf") from None
        if _tls_error(exc):
            raise DownloadError("performing request", f"TLS Error occured: {exc}",
                                retriable=False, stat="download.response.tls") from None
        raise DownloadError("performing request", f'Get "{url}": {exc or type(exc).__name__}',
                            retriable=True) from None


async def _read(resp: aiohttp.ClientResponse, limits: Limits, tmp_path: str,
                on_head: Callable[[bytes], None], on_status: Callable[[int], None]) -> Result:
    status = resp.status
    on_status(status)
    if status >= 400:
        reason = f"{status} {resp.reason or ''}".rstrip()
        raise DownloadError("processing response", f"Received status code {reason}",
                            retriable=status >= 500)
    length = resp.content_length
    if length is not None and length > limits.max_size and not resp.headers.get(
            "Content-Encoding"):
        raise DownloadError("processing response",
                            f"Content-Length {length} exceeds the maximum file size of "
                            f"{limits.max_size} bytes", retriable=False)
    if length is not None and length <= SMALL_BODY and "Content-Encoding" not in resp.headers:
        return await _read_small(resp, limits, status, on_head)
    try:
        # Metadata operations can wait on the filesystem journal behind other jobs' fsyncs:
        # never on the event loop.
        fd = await asyncio.to_thread(os.open, tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                     0o644)
    except OSError as exc:
        raise DownloadError("creating tmp file", str(exc), retriable=True,
                            internal=True) from None
    head = bytearray()
    size = 0
    head_done = False
    try:
        while True:
            try:
                chunk = await resp.content.readany()
            except (aiohttp.ClientError, OSError) as exc:
                raise DownloadError("downloading file", _body_error(exc), retriable=True,
                                    stat="download.response.body") from None
            except TimeoutError:
                raise DownloadError("downloading file", "no data received within the "
                                    "read timeout", retriable=True,
                                    stat="download.response.body") from None
            if not chunk:
                break
            size += len(chunk)
            if size > limits.max_size:
                raise DownloadError("downloading file", f"file exceeds the maximum size of "
                                    f"{limits.max_size} bytes", retriable=False)
            if not head_done:
                head += chunk[: SNIFF_LEN - len(head)]
                if len(head) >= SNIFF_LEN:
                    head_done = True
                    on_head(bytes(head))
            _write_all(fd, chunk)
        if not head_done:
            on_head(bytes(head))
    except BaseException:
        os.close(fd)
        raise
    return Result(status=status, head=bytes(head), size=size, fd=fd)


async def _read_small(resp: aiohttp.ClientResponse, limits: Limits, status: int,
                      on_head: Callable[[bytes], None]) -> Result:
    try:
        body = await resp.read()
    except (aiohttp.ClientError, OSError) as exc:
        raise DownloadError("downloading file", _body_error(exc), retriable=True,
                            stat="download.response.body") from None
    except TimeoutError:
        raise DownloadError("downloading file", "no data received within the read timeout",
                            retriable=True, stat="download.response.body") from None
    if len(body) > limits.max_size:
        raise DownloadError("downloading file", f"file exceeds the maximum size of "
                            f"{limits.max_size} bytes", retriable=False)
    head = body[:SNIFF_LEN]
    on_head(head)
    return Result(status=status, head=head, size=len(body), fd=-1, body=body)


def write_file(path: str, data: bytes) -> int:
    """Create ``path`` and write ``data`` (a small body: quick syscalls, run on the loop);
    return the open descriptor for the caller to fsync and close."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise DownloadError("creating tmp file", str(exc), retriable=True,
                            internal=True) from None
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as exc:
            # A full disk is our problem, not the job's: internal, not counted (spec §3 step 6).
            raise DownloadError("downloading file", str(exc), retriable=True,
                                internal=True) from None
        view = view[n:]


def _body_error(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"unexpected EOF ({exc})"
    return str(exc) or type(exc).__name__
