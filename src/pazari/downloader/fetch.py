"""One download: GET with redirects followed by hand (limit, SSRF check per hop), the body
streamed to the temp file with size and time limits (spec §3 download, limitations 3, 10).

The first 1 KiB is handed to ``on_head`` as soon as it is complete (or at EOF), so a MIME
mismatch stops the transfer early, as the original's tee did. The HTTP exchange is
:mod:`pazari.downloader.curl`'s: body chunks reach the file from libcurl's WRITEFUNCTION
(decoded in bounded slices).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pazari.downloader import curl, ssrf
from pazari.downloader import transport as tx
from pazari.downloader.errors import DownloadError
from pazari.downloader.redirects import REDIRECTS, RedirectRefused, headers_for_hop, next_hop
from pazari.downloader.ssrf import ForbiddenAddress, Networks, parse_networks
from pazari.mime import SNIFF_LEN

#: Checks the target of a request sent through a proxy (the proxy dials it, not us).
TargetGuard = Callable[[str], Awaitable[None]]
CHUNK = 64 * 1024
#: A body announced at most this long (and not content-encoded, so it cannot inflate) is
#: read into memory and written, synced and renamed by one worker-thread hop; longer or
#: unannounced bodies stream to the temp file.
SMALL_BODY = 64 * 1024
#: Bytes of a streamed body queued for the writer thread before the transfer pauses.
WRITE_QUEUE_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float  # overall, body included; exceeding it is not retriable
    job_timeout: float  # the job's download_timeout (0 = none); retriable like the original
    max_size: int
    max_redirects: int
    allow_private: bool
    allowed: Networks = ()
    allow_insecure_redirects: bool = False


@dataclass(slots=True)
class Result:
    status: int
    head: bytes
    size: int
    fd: int  # the temp file, still open: the caller commits it (pazari.filestore) off the loop
    body: bytes | None = None  # a small body, not yet on disk (then fd is -1)


def make_client(connect_timeout: float, read_timeout: float, allow_private: bool,
                allowed_networks: list[str], max_file_size: int = 0) -> tx.Client:
    """The processor's client (libcurl's multi interface, :mod:`pazari.downloader.curl`):
    the SSRF guard on every address it dials, unless private networks are allowed."""
    return curl.Client(connect_timeout=connect_timeout, read_timeout=read_timeout,
                       allowed_networks=None if allow_private
                       else parse_networks(allowed_networks),
                       max_file_size=max_file_size)


def make_target_guard(allow_private: bool, allowed_networks: list[str]) -> TargetGuard | None:
    """The check of a proxied request's target (None when private networks are allowed):
    only the proxy's address is dialled here, so without it a job could make the proxy
    fetch 169.254.169.254 for us (issue 11)."""
    if allow_private:
        return None
    return ssrf.target_guard(ssrf.caching(ssrf.default_resolver),
                             parse_networks(allowed_networks))


async def fetch(client: tx.Client, url: str, headers: Mapping[str, str],
                proxy: str, limits: Limits, tmp_path: str,
                on_head: Callable[[bytes], None], on_status: Callable[[int], None],
                guard: TargetGuard | None = None) -> Result:
    """Download ``url`` into ``tmp_path``; raise DownloadError (phase, retriable) on failure.
    ``on_status`` sees every final status code before it is judged."""
    # One deadline for the whole download, every hop and the body included, given to
    # libcurl as each hop's TIMEOUT_MS: an asyncio.timeout per job cost 4% of the processor.
    overall = limits.timeout
    job_bound = 0 < limits.job_timeout < overall
    deadline = asyncio.get_running_loop().time() + (limits.job_timeout if job_bound
                                                     else overall)
    try:
        return await _fetch(client, url, headers, proxy, limits, tmp_path, on_head,
                            on_status, deadline, guard)
    except tx.DeadlineExceeded:
        if job_bound:
            raise DownloadError(
                "performing request",
                f"context deadline exceeded (download_timeout {limits.job_timeout:g}s)",
                retriable=True) from None
        raise DownloadError(
            "downloading file", f"download did not finish within the {overall:g}s limit",
            retriable=False) from None


async def _fetch(client: tx.Client, url: str, headers: Mapping[str, str],
                 proxy: str, limits: Limits, tmp_path: str,
                 on_head: Callable[[bytes], None], on_status: Callable[[int], None],
                 deadline: float, guard: TargetGuard | None) -> Result:
    current = url
    hop_headers = headers
    for _hop in range(limits.max_redirects + 1):
        if proxy and guard is not None:
            await _check_target(guard, current)
        resp = await _request(client, current, hop_headers, proxy, deadline)
        try:
            location = resp.headers.get("location")
            if resp.status in REDIRECTS and location:
                await _discard(resp)
                try:
                    current = next_hop(current, location,
                                       allow_insecure=limits.allow_insecure_redirects)
                except RedirectRefused as exc:
                    on_status(resp.status)
                    raise DownloadError("performing request", f'Get "{url}": {exc}',
                                        retriable=False, stat="download.response.redirect"
                                        ) from None
                hop_headers = headers_for_hop(headers, url, current)
                continue
            return await _read(resp, limits, tmp_path, on_head, on_status)
        finally:
            resp.release()
    # Go's client: "stopped after 10 redirects", a request error, so retriable (spec §3).
    raise DownloadError("performing request",
                        f'Get "{url}": stopped after {limits.max_redirects} redirects',
                        retriable=True, stat="download.response.redirect")


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date; None if absent or
    malformed."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def _check_target(guard: TargetGuard, url: str) -> None:
    try:
        await guard(url)
    except ForbiddenAddress as exc:
        raise DownloadError("performing request", f'Get "{url}": {exc}',
                            retriable=False, stat="download.response.ssrf") from None
    except (OSError, tx.HTTPClientError, ValueError) as exc:
        raise DownloadError("performing request", f'Get "{url}": {exc}',
                            retriable=True) from None


async def _discard(resp: tx.Response) -> None:
    """Read a short redirect body so the connection can serve the next hop; a long or
    unannounced one is not worth it (release closes the connection instead)."""
    length = resp.content_length
    if length is not None and length <= SMALL_BODY:
        with contextlib.suppress(tx.HTTPClientError):
            await resp.stream(_drop)


def _drop(_chunk: bytes) -> None:
    pass


async def _request(client: tx.Client, url: str, headers: Mapping[str, str],
                   proxy: str, deadline: float) -> tx.Response:
    try:
        return await client.request("GET", url, headers, proxy=proxy, deadline=deadline)
    except ForbiddenAddress as exc:
        raise DownloadError("performing request", f'Get "{url}": {exc}',
                            retriable=False, stat="download.response.ssrf") from None
    except tx.DeadlineExceeded:
        raise
    except tx.TooLarge as exc:  # libcurl's MAXFILESIZE on the announced Content-Length
        raise DownloadError("processing response", str(exc), retriable=False) from None
    except tx.TLSError as exc:
        # The original matched "x509"/"tls" in the error text (spec §3 step 4).
        raise DownloadError("performing request", f"TLS Error occured: {exc}",
                            retriable=False, stat="download.response.tls") from None
    except tx.HTTPClientError as exc:
        raise DownloadError("performing request", f'Get "{url}": {exc}',
                            retriable=True) from None


async def _read(resp: tx.Response, limits: Limits, tmp_path: str,
                on_head: Callable[[bytes], None], on_status: Callable[[int], None]) -> Result:
    status = resp.status
    on_status(status)
    if status >= 400:
        reason = f"{status} {resp.reason}".rstrip()
        # 429 is a request to come back later, not a verdict on the job: retriable, unlike
        # the other 4xx (spec §3 step 5), and both it and 503 say when (Retry-After).
        retry_after = (parse_retry_after(resp.headers.get("retry-after", ""))
                       if status in (429, 503) else None)
        raise DownloadError("processing response", f"Received status code {reason}",
                            retriable=status >= 500 or status == 429,
                            retry_after=retry_after)
    length = resp.content_length
    encoded = "content-encoding" in resp.headers
    if length is not None and length > limits.max_size and not encoded:
        raise DownloadError("processing response",
                            f"Content-Length {length} exceeds the maximum file size of "
                            f"{limits.max_size} bytes", retriable=False)
    if length is not None and length <= SMALL_BODY and not encoded:
        return await _read_small(resp, limits, status, on_head)
    try:
        # Metadata operations can wait on the filesystem journal behind other jobs' fsyncs:
        # never on the event loop.
        fd = await asyncio.to_thread(os.open, tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                     0o644)
    except OSError as exc:
        raise DownloadError("creating tmp file", str(exc), retriable=True,
                            internal=True) from None
    writer = FileWriter(fd, asyncio.get_running_loop())
    head = bytearray()
    size = 0
    head_done = False

    def sink(chunk: bytes) -> None:
        # Runs in libcurl's WRITEFUNCTION (or the decoder's slice) on the loop: checks and
        # sniffs each chunk, then hands it to the writer thread; raising ends the transfer.
        nonlocal size, head_done
        size += len(chunk)
        if size > limits.max_size:
            raise DownloadError("downloading file", f"file exceeds the maximum size of "
                                f"{limits.max_size} bytes", retriable=False)
        if not head_done:
            head.extend(chunk[: SNIFF_LEN - len(head)])
            if len(head) >= SNIFF_LEN:
                head_done = True
                on_head(bytes(head))
        writer.write(chunk)

    try:
        await _body(resp, sink, writer)
        if not head_done:
            on_head(bytes(head))
        await writer.flush()
    except BaseException:
        await writer.abandon()
        os.close(fd)
        raise
    return Result(status=status, head=bytes(head), size=size, fd=fd)


class FileWriter:
    """A streamed body's writes, off the event loop (issue 11: "file writes stay in the
    worker thread"): chunks queue here and one worker-thread task at a time writes them in
    order. A page-cache write is cheap, but one that dirty-page throttling
    (balance_dirty_pages) holds for tens of milliseconds would stall every download on the
    loop. Memory stays bounded: past ``limit`` queued bytes the room is full and the transfer
    pauses (:class:`pazari.downloader.transport.Room`) until the thread has caught up to
    half of it. A write error (a full disk) is raised by the next ``write`` or ``flush``."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop,
                 limit: int = WRITE_QUEUE_LIMIT) -> None:
        self.fd = fd
        self.loop = loop
        self.limit = limit
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes queued or being written
        self._running: asyncio.Future[None] | None = None  # the thread's current task
        self._error: DownloadError | None = None
        self._stop = False
        self._waiters: list[Callable[[], None]] = []
        self._wake_pending = False  # a wake-up is on its way from the thread

    # -- the loop's side ------------------------------------------------------------
    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        with self._lock:
            self._queue.append(chunk)
            self._queued += len(chunk)
        if self._running is None:
            self._running = self.loop.run_in_executor(None, self._drain)
            self._running.add_done_callback(self._drained)

    def full(self) -> bool:
        return self._queued >= self.limit and self._error is None

    def when_room(self, callback: Callable[[], None]) -> None:
        self._waiters.append(callback)
        if not self.full():
            # Never synchronously: this runs inside libcurl's write callback, where the
            # transfer must not be unpaused.
            self.loop.call_soon(self._wake)

    async def flush(self) -> None:
        """Wait until every queued chunk is written; raise the write error if one failed."""
        await self._idle()
        if self._error is not None:
            raise self._error

    async def abandon(self) -> None:
        """Stop writing (the download failed): the descriptor may be closed after this."""
        self._stop = True
        await self._idle()

    async def _idle(self) -> None:
        while self._running is not None:
            if self._running.done():
                # Its done-callback (_drained) is queued on the loop: let it run. Awaiting
                # the finished future again would return at once and never yield.
                await asyncio.sleep(0)
            else:
                await asyncio.wait((self._running,))

    def _drained(self, task: asyncio.Future[None]) -> None:
        self._running = None
        exc = None if task.cancelled() else task.exception()
        if exc is not None and self._error is None:
            self._error = DownloadError("downloading file", str(exc), retriable=True,
                                        internal=True)
        if self._queue and self._error is None and not self._stop:
            # Queued after the thread had looked for more, before it ended.
            self._running = self.loop.run_in_executor(None, self._drain)
            self._running.add_done_callback(self._drained)
        self._wake()

    def _wake(self) -> None:
        self._wake_pending = False
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            callback()

    # -- the worker thread's side -----------------------------------------------------
    def _drain(self) -> None:
        while not self._stop:
            with self._lock:
                if not self._queue:
                    return
                chunk = self._queue.popleft()
            try:
                _write_all(self.fd, chunk)
            except DownloadError as exc:
                self._error = exc
                return
            with self._lock:
                self._queued -= len(chunk)
                room = self._queued <= self.limit // 2
            if room and self._waiters and not self._wake_pending:
                self._wake_pending = True  # one wake-up in flight at a time
                self.loop.call_soon_threadsafe(self._wake)


async def _body(resp: tx.Response, sink: tx.Sink, room: tx.Room | None = None) -> None:
    try:
        await resp.stream(sink, room)
    except tx.DeadlineExceeded:
        raise
    except tx.ReadTimeout:
        raise DownloadError("downloading file", "no data received within the read timeout",
                            retriable=True, stat="download.response.body") from None
    except tx.TooLarge as exc:
        raise DownloadError("downloading file", str(exc), retriable=False) from None
    except tx.HTTPClientError as exc:
        raise DownloadError("downloading file", str(exc), retriable=True,
                            stat="download.response.body") from None


async def _read_small(resp: tx.Response, limits: Limits, status: int,
                      on_head: Callable[[bytes], None]) -> Result:
    parts: list[bytes] = []
    await _body(resp, parts.append)
    body = b"".join(parts)
    if len(body) > limits.max_size:
        raise DownloadError("downloading file", f"file exceeds the maximum size of "
                            f"{limits.max_size} bytes", retriable=False)
    head = body[:SNIFF_LEN]
    on_head(head)
    return Result(status=status, head=head, size=len(body), fd=-1, body=body)


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
