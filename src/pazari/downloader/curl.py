"""libcurl's multi interface driven by the asyncio loop (issue 11), for downloads and
callbacks: HTTP/1.1 and HTTP/2, Happy Eyeballs, HTTP and HTTPS proxies, TLS by OpenSSL;
gzip, deflate and brotli bodies decoded in bounded steps.

Integration, after tornado's ``curl_httpclient``:

- one ``CurlMulti`` per client; ``M_SOCKETFUNCTION`` maps libcurl's interest in a socket to
  ``loop.add_reader``/``add_writer`` (removed and re-added each time: descriptors get
  reused), ``M_TIMERFUNCTION`` to one ``loop.call_later``;
- every readiness or timer event calls ``socket_action`` until it stops asking for more,
  then drains ``info_read`` (finished transfers) and resyncs the timer with
  ``multi.timeout()``;
- easy handles come from a free list and are ``reset()`` when they return.

Threads: none of ours. libcurl's threaded resolver runs getaddrinfo in its own threads
and reports through a socket the multi watches; every callback below (socket, timer,
header, write, opensocket) runs on the loop's thread inside ``socket_action`` (or inside
``pause()``). No callback may raise into libcurl: failures are stored on the transfer and
raised by the awaiting coroutine once libcurl reports the transfer finished.

Per transfer (``_Transfer``):

- ``PROTOCOLS``/``REDIR_PROTOCOLS`` are http and https only, and libcurl does not follow
  redirects: :mod:`pazari.downloader.redirects` decides each hop, so every hop is a new
  request that goes through the same guard;
- ``OPENSOCKETFUNCTION`` sees every address libcurl dials (the proxy's included) and
  refuses a forbidden one (the SSRF guard, :mod:`pazari.downloader.ssrf`): the check is on
  the address actually connected, so DNS rebinding cannot slip past it;
- the head is collected by ``HEADERFUNCTION`` (1xx heads and a proxy's CONNECT answer are
  skipped) and ``request()`` returns when it is complete;
- body bytes reach ``WRITEFUNCTION`` as sent and are decoded on their way to the sink
  (:mod:`pazari.downloader.decoding`, in bounded steps): before ``stream()`` names a sink they are
  kept up to ``PENDING_LIMIT``, then the transfer pauses (``CURL_WRITEFUNC_PAUSE``) until
  the sink arrives; the sink then gets each chunk as it comes (at most
  ``CURL_MAX_WRITE_SIZE``, 16 KiB), so memory per transfer stays bounded;
- ``TIMEOUT_MS`` is the caller's deadline, ``LOW_SPEED_LIMIT``/``TIME`` the read timeout
  (no byte for ``read_timeout`` seconds), ``CONNECTTIMEOUT_MS`` the connect timeout,
  ``MAXFILESIZE_LARGE`` the announced-size bound when the caller gives one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import idna
import pycurl

from pazari import __version__
from pazari.downloader.decoding import ACCEPT_ENCODING, Decoder, decoder
from pazari.downloader.ssrf import ForbiddenAddress, Networks, is_forbidden
from pazari.downloader.transport import (
    ConnectError,
    DeadlineExceeded,
    InvalidRequest,
    ReadTimeout,
    ResponseError,
    Room,
    Sink,
    TLSError,
    TooLarge,
)

USER_AGENT = f"pazari-downloader/{__version__}"
PENDING_LIMIT = 256 * 1024  # body bytes kept before stream() is called; then the transfer pauses
RAW_PENDING = 64 * 1024  # encoded bytes queued for decoding; then the transfer pauses
DECODE_BUDGET = 1 << 20  # decoded bytes per loop iteration
MAX_RESPONSE_HEAD = 10 << 20  # as Go's MaxResponseHeaderBytes
_SUPPRESS_CONNECT_HEADERS = 265  # CURLOPT_SUPPRESS_CONNECT_HEADERS (not named by pycurl)
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# libcurl error codes that mean TLS failed (the original matched "x509"/"tls", spec §3 step 4).
_TLS_ERRORS = frozenset((35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98))
_CONNECT_ERRORS = frozenset((5, 6, 7, 45, 97))  # proxy/host resolution, connect, interface


def _ca_file() -> str | None:
    """The trust store: ``SSL_CERT_FILE`` or the system's (the wheel's libcurl was built
    with another distribution's path)."""
    env = os.environ.get("SSL_CERT_FILE")
    if env:
        return env
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, "/etc/ssl/certs/ca-certificates.crt",
                      "/etc/pki/tls/certs/ca-bundle.crt"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _check_header(name: str, value: str) -> None:
    if not name or not all(c in _TOKEN for c in name):
        raise InvalidRequest(f'net/http: invalid header field name "{name}"')
    if "\r" in value or "\n" in value or "\x00" in value:
        raise InvalidRequest(f'net/http: invalid header field value for "{name}"')


def _normalize_url(url: str) -> str:
    """Refuse what Go's url.Parse refuses and other schemes; encode an international host
    with UTS #46 (``faß.de`` is ``xn--fa-hia.de``, not ``fass.de``), which this libcurl
    build (no libidn2) would not do."""
    if any(c < " " or c == "\x7f" for c in url):
        raise InvalidRequest("net/url: invalid control character in URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest(f'unsupported protocol scheme "{parts.scheme}"')
    if not host:
        raise InvalidRequest("no Host in request URL")
    if port == 0:
        raise InvalidRequest("invalid port 0")
    if host.isascii():
        return url
    try:
        ascii_host = idna.encode(host, uts46=True, transitional=False).decode()
    except idna.IDNAError as exc:
        raise InvalidRequest(f"invalid host {host!r}: {exc}") from None
    netloc = ascii_host if port is None else f"{ascii_host}:{port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


class Response:
    """A response whose head has arrived; :meth:`stream` hands over the body and
    :meth:`release` ends the transfer (the connection stays in libcurl's cache when the
    response was complete)."""

    __slots__ = ("_transfer", "headers", "reason", "status")

    def __init__(self, transfer: _Transfer) -> None:
        self._transfer: _Transfer | None = transfer
        self.status = transfer.status
        self.reason = transfer.reason
        self.headers = transfer.headers

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None or not raw.isdigit():
            return None
        return int(raw)

    async def stream(self, sink: Sink, room: Room | None = None) -> None:
        """Hand every body chunk (decoded) to ``sink`` as it arrives; return at the end of
        the body. An exception raised by ``sink`` ends the transfer and is raised here.
        With ``room``, nothing reaches the sink while ``room.full()``: the transfer pauses
        (and decoding waits) until the room calls back."""
        transfer = self._transfer
        assert transfer is not None, "the response was released"
        encoding = self.headers.get("content-encoding", "").strip().lower()
        transfer.room = room
        await transfer.stream(sink, decoder(encoding, sink) if encoding else None)

    async def read(self) -> bytes:
        parts: list[bytes] = []
        await self.stream(parts.append)
        return b"".join(parts)

    def release(self) -> None:
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            transfer.client._end(transfer)


class _Transfer:
    """One request on one easy handle, from ``add_handle`` to ``info_read``."""

    def __init__(self, client: Client, easy: pycurl.Curl, deadline: float) -> None:
        self.client = client
        self.easy = easy
        self.deadline = deadline
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self._head_size = 0
        self._in_head = False
        self.head: asyncio.Future[None] = client.loop.create_future()
        self.done: asyncio.Future[None] = client.loop.create_future()
        self.error: BaseException | None = None  # raised by a callback, re-raised by us
        self.forbidden: ForbiddenAddress | None = None
        self.sink: Sink | None = None
        self.room: Room | None = None
        self.decoder: Decoder | None = None
        self._pump_scheduled = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.paused = False
        self.active = True  # still in the multi

    # -- callbacks (run inside socket_action) -------------------------------------------
    def on_header(self, line: bytes) -> None:
        if self.head.done():
            return  # trailers
        self._head_size += len(line)
        if self._head_size > MAX_RESPONSE_HEAD:
            self.error = ResponseError("server response headers exceeded the limit")
            self.client._abort_soon(self)
            return
        if line.startswith(b"HTTP/"):
            # A new head: 1xx informational ones are skipped, the final one follows.
            parts = line.rstrip(b"\r\n").split(b" ", 2)
            try:
                self.status = int(parts[1])
            except (IndexError, ValueError):
                self.error = ResponseError(f"malformed HTTP status line {line[:100]!r}")
                self.client._abort_soon(self)
                return
            self.reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
            self.headers = {}
            self._in_head = True
            return
        if line in (b"\r\n", b"\n"):
            if self._in_head and self.status >= 200:
                self.head.set_result(None)
            self._in_head = False
            return
        name, sep, value = line.partition(b":")
        if not sep:
            return  # a folded line or garbage: ignored, as llhttp-lenient readers do
        key = name.decode("latin-1").strip().lower()
        if key not in self.headers:
            self.headers[key] = value.strip().decode("utf-8", "surrogateescape")

    def on_write(self, data: bytes) -> int | None:
        dec = self.decoder
        if dec is not None:
            # Encoded: queued for the pump, which decodes in slices between loop
            # iterations; while the queue is full libcurl keeps the data (pause).
            if dec.pending >= RAW_PENDING:
                self.paused = True
                return pycurl.WRITEFUNC_PAUSE
            dec.push(data)
            self._pump_soon()
            return None
        sink = self.sink
        if sink is None:
            if self.pending_size >= PENDING_LIMIT:
                self.paused = True
                return pycurl.WRITEFUNC_PAUSE  # data is handed again after pause(CONT)
            self.pending.append(data)
            self.pending_size += len(data)
            return None
        room = self.room
        if room is not None and room.full():
            # The sink's consumer is behind: libcurl keeps this chunk and hands it again
            # after pause(CONT), which the room's callback asks for.
            self.paused = True
            room.when_room(self._room_again)
            return pycurl.WRITEFUNC_PAUSE
        try:
            sink(data)
        except BaseException as exc:  # the sink's verdict (size, MIME): ends the transfer
            self.error = exc
            return 0
        return None

    def on_open_socket(self, purpose: int, address: tuple[int, int, int, tuple[str, int]]
                       ) -> socket.socket | int:
        family, socktype, protocol, addr = address
        host = addr[0]
        allowed = self.client.allowed
        if allowed is not None and is_forbidden(host, allowed):
            self.forbidden = ForbiddenAddress(self.client.current_host(self), host)
            return pycurl.SOCKET_BAD
        sock = socket.socket(family, socktype, protocol)
        # pycurl hands libcurl a dup() of the descriptor and drops our object: close ours
        # once the callback has returned, rather than leaving it to the collector (an
        # unclosed socket, which make test-race reported by the thousand).
        self.client.loop.call_soon(sock.close)
        return sock

    # -- decoding in slices ---------------------------------------------------------------
    def _pump_soon(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.client.loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Decode about DECODE_BUDGET bytes, then let the loop run: a bomb costs the loop
        a slice at a time, never the whole chunk's inflation."""
        self._pump_scheduled = False
        dec = self.decoder
        if dec is None or not self.active:
            return  # finished: stream() decodes the rest
        room = self.room
        if room is not None and room.full():
            room.when_room(self._pump_soon)  # decoded bytes would only pile up
            return
        try:
            more = dec.drain(DECODE_BUDGET)
        except BaseException as exc:  # the sink's verdict or a corrupt body
            self.error = exc
            self.client._abort(self)
            return
        if more:
            self._pump_soon()
        elif self.paused:
            self._resume()

    def _room_again(self) -> None:
        if self.paused and self.active:
            self._resume()

    def _resume(self) -> None:
        self.paused = False
        try:
            self.easy.pause(pycurl.PAUSE_CONT)
        except pycurl.error as exc:
            self.error = self.error or ResponseError(str(exc))
        self.client._kick()

    # -- the coroutine side -------------------------------------------------------------
    async def stream(self, sink: Sink, dec: Decoder | None) -> None:
        if dec is not None:
            for chunk in self.pending:
                dec.push(chunk)
            self.decoder = dec
            self._pump_soon()
        else:
            for chunk in self.pending:
                sink(chunk)
        self.pending.clear()
        self.pending_size = 0
        self.sink = sink
        if self.paused and self.active and dec is None:
            self._resume()
        try:
            await asyncio.shield(self.done)
            if dec is not None:
                while True:
                    await self._wait_for_room()
                    if not dec.drain(DECODE_BUDGET):
                        break
                    await asyncio.sleep(0)
                dec.finish()
        except asyncio.CancelledError:
            self.client._end(self)
            raise

    async def _wait_for_room(self) -> None:
        room = self.room
        if room is not None and room.full():
            ready: asyncio.Future[None] = self.client.loop.create_future()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            room.when_room(wake)
            await ready


class Client:
    """Keep-alive connections (libcurl's cache, per multi) and the request entry point."""

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 60.0,
                 allowed_networks: Networks | None = None, accept_encoding: bool = True,
                 user_agent: str = USER_AGENT, max_connections: int = 0,
                 max_file_size: int = 0) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # None: no guard; a tuple: refuse every non-global address except these networks.
        self.allowed = allowed_networks
        self.accept_encoding = accept_encoding
        self.user_agent = user_agent
        self.max_file_size = max_file_size
        self.ca_file = _ca_file()
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        if max_connections:
            self.multi.setopt(pycurl.M_MAXCONNECTS, max_connections)
        self._free: list[pycurl.Curl] = []
        self._transfers: dict[pycurl.Curl, _Transfer] = {}
        self._fds: dict[int, int] = {}  # fd -> events we watch
        self._timer: asyncio.TimerHandle | None = None
        self._kicked = False
        # What each transfer dials, for the SSRF guard's message: the proxy when there is
        # one (libcurl dials only the proxy then), otherwise the URL's host.
        self._urls: dict[_Transfer, str] = {}

    # -- requests -----------------------------------------------------------------------
    async def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                      body: bytes | None = None, proxy: str = "",
                      deadline: float | None = None) -> Response:
        """Send the request; return once the response head is in (read the body from the
        :class:`Response`, then release it). ``deadline`` (the loop's clock) bounds the
        whole exchange, connect and body included: DeadlineExceeded when it passes."""
        url = _normalize_url(url)
        lines = []
        given = set()
        for name, value in (headers or {}).items():
            _check_header(name, value)
            low = name.lower()
            if low in ("host", "content-length", "transfer-encoding", "connection"):
                continue  # framing is libcurl's (Go ignores these too)
            given.add(low)
            lines.append(f"{name}: {value}")
        if "accept" not in given:
            lines.append("Accept: */*")
        if self.accept_encoding and "accept-encoding" not in given:
            lines.append(f"Accept-Encoding: {ACCEPT_ENCODING}")
        lines.append("Expect:")  # no 100-continue round trip for callbacks
        until = float("inf") if deadline is None else deadline
        remaining = until - self.loop.time()
        if remaining <= 0:
            raise DeadlineExceeded("deadline exceeded before the request")
        easy = self._free.pop() if self._free else pycurl.Curl()
        transfer = _Transfer(self, easy, until)
        self._setup(easy, transfer, method, url, lines, body, proxy, remaining,
                    "user-agent" not in given)
        self._transfers[easy] = transfer
        self._urls[transfer] = (proxy if "://" in proxy else f"http://{proxy}") if proxy else url
        self.multi.add_handle(easy)
        self._kick()
        try:
            await transfer.head  # _finish settles it if the transfer ends without a head
        except BaseException:
            self._end(transfer)
            raise
        return Response(transfer)

    def _setup(self, easy: pycurl.Curl, transfer: _Transfer, method: str, url: str,
               lines: list[str], body: bytes | None, proxy: str, remaining: float,
               user_agent: bool) -> None:
        easy.setopt(pycurl.URL, url)
        easy.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        easy.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        easy.setopt(pycurl.FOLLOWLOCATION, 0)
        easy.setopt(pycurl.NOSIGNAL, 1)
        easy.setopt(pycurl.HTTPHEADER, lines)
        if user_agent:
            easy.setopt(pycurl.USERAGENT, self.user_agent)
        # Bodies are decoded by pazari.downloader.decoding, not libcurl (which refuses
        # multi-member gzip); libcurl hands over the bytes as sent.
        easy.setopt(pycurl.HTTP_CONTENT_DECODING, 0)
        easy.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        easy.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(self.connect_timeout * 1000)))
        if remaining != float("inf"):
            easy.setopt(pycurl.TIMEOUT_MS, max(1, int(remaining * 1000)))
        if self.read_timeout:
            easy.setopt(pycurl.LOW_SPEED_LIMIT, 1)
            easy.setopt(pycurl.LOW_SPEED_TIME, max(1, int(self.read_timeout)))
        if self.max_file_size:
            easy.setopt(pycurl.MAXFILESIZE_LARGE, self.max_file_size)
        easy.setopt(pycurl.TCP_KEEPALIVE, 1)
        if self.ca_file:
            easy.setopt(pycurl.CAINFO, self.ca_file)
        easy.setopt(pycurl.HEADERFUNCTION, transfer.on_header)
        easy.setopt(pycurl.WRITEFUNCTION, transfer.on_write)
        easy.setopt(pycurl.OPENSOCKETFUNCTION, transfer.on_open_socket)
        easy.setopt(pycurl.PROXY, proxy)  # "" = no proxy (libcurl ignores the environment)
        if proxy:
            easy.setopt(_SUPPRESS_CONNECT_HEADERS, 1)
        if method == "GET":
            easy.setopt(pycurl.HTTPGET, 1)
        elif method == "POST":
            easy.setopt(pycurl.POST, 1)
            easy.setopt(pycurl.POSTFIELDSIZE, len(body or b""))
            easy.setopt(pycurl.COPYPOSTFIELDS, body or b"")
        else:
            easy.setopt(pycurl.CUSTOMREQUEST, method)

    def current_host(self, transfer: _Transfer) -> str:
        """The host ``transfer`` dials: its proxy's, or its URL's."""
        url = self._urls.get(transfer, "")
        try:
            return urlsplit(url).hostname or url
        except ValueError:
            return url

    # -- finishing ------------------------------------------------------------------------
    def _finish(self, easy: pycurl.Curl, errno: int, message: str) -> None:
        transfer = self._transfers.pop(easy, None)
        if transfer is None:
            return
        self._detach(transfer)
        exc = self._error(transfer, errno, message)
        if not transfer.head.done():
            if exc is None:
                exc = ResponseError("server closed the connection before the response head")
            transfer.head.set_exception(exc)  # request() raises it
            transfer.done.set_exception(exc)
            transfer.done.exception()  # nobody streams a response that never came
            return
        if exc is None:
            transfer.done.set_result(None)
        else:
            transfer.done.set_exception(exc)

    def _error(self, transfer: _Transfer, errno: int, message: str) -> BaseException | None:
        if transfer.error is not None:
            return transfer.error
        if errno == 0:
            return None
        if transfer.forbidden is not None:
            return transfer.forbidden
        if errno == pycurl.E_OPERATION_TIMEDOUT:
            if self.loop.time() >= transfer.deadline - 0.05:
                return DeadlineExceeded("deadline exceeded")
            if "too slow" in message.lower() or transfer.head.done():
                return ReadTimeout("no data received within the read timeout")
            return ConnectError(f"dial tcp: i/o timeout ({message})")
        if errno in _TLS_ERRORS:
            return TLSError(message)
        if errno in _CONNECT_ERRORS:
            return ConnectError(message)
        if errno == 18:  # CURLE_PARTIAL_FILE
            return ResponseError("unexpected EOF")
        if errno == 63:  # CURLE_FILESIZE_EXCEEDED
            return TooLarge(f"file exceeds the maximum size of {self.max_file_size} bytes")
        return ResponseError(message)

    def _detach(self, transfer: _Transfer) -> None:
        if transfer.active:
            transfer.active = False
            with contextlib.suppress(pycurl.error):
                self.multi.remove_handle(transfer.easy)
        self._urls.pop(transfer, None)

    def _end(self, transfer: _Transfer) -> None:
        """The caller is done with ``transfer``: abort it if unfinished, recycle the
        handle."""
        easy = transfer.easy
        if self._transfers.get(easy) is transfer:
            del self._transfers[easy]
            self._detach(transfer)
            if not transfer.done.done():
                transfer.done.set_exception(ResponseError("transfer abandoned"))
                transfer.done.exception()
            if not transfer.head.done():
                transfer.head.cancel()
        elif transfer.done.done() and not transfer.done.cancelled():
            # Finished before the caller streamed it (TooLarge right after the head, say),
            # and the caller let it go: the body's outcome is dropped on purpose, not lost
            # ("Future exception was never retrieved", found by make test-race, issue 19).
            transfer.done.exception()
        if transfer.easy is not None and len(self._free) < 256:
            easy.reset()
            self._free.append(easy)
        transfer.pending.clear()

    def _abort_soon(self, transfer: _Transfer) -> None:
        """From inside a callback: libcurl must not lose the handle mid-call; the loop
        removes it next."""
        self.loop.call_soon(self._abort, transfer)

    def _abort(self, transfer: _Transfer) -> None:
        if self._transfers.get(transfer.easy) is transfer:
            self._finish(transfer.easy, 23, "aborted")

    # -- the multi on the loop ----------------------------------------------------------
    def _on_socket(self, event: int, fd: int, _multi: object, _data: object) -> None:
        watched = self._fds.pop(fd, 0)
        if watched & 1:
            self.loop.remove_reader(fd)
        if watched & 2:
            self.loop.remove_writer(fd)
        if event == pycurl.POLL_REMOVE:
            return
        want = {pycurl.POLL_IN: 1, pycurl.POLL_OUT: 2, pycurl.POLL_INOUT: 3}.get(event, 0)
        if want & 1:
            self.loop.add_reader(fd, self._action, fd, pycurl.CSELECT_IN)
        if want & 2:
            self.loop.add_writer(fd, self._action, fd, pycurl.CSELECT_OUT)
        if want:
            self._fds[fd] = want

    def _on_timer(self, msecs: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if msecs >= 0:
            self._timer = self.loop.call_later(msecs / 1000.0, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        self._action(pycurl.SOCKET_TIMEOUT, 0)

    def _kick(self) -> None:
        """Run libcurl soon (a new handle, an unpaused one): once per loop iteration."""
        if not self._kicked:
            self._kicked = True
            self.loop.call_soon(self._kicked_action)

    def _kicked_action(self) -> None:
        self._kicked = False
        self._action(pycurl.SOCKET_TIMEOUT, 0)

    def _action(self, fd: int, event: int) -> None:
        while True:
            try:
                ret, _running = self.multi.socket_action(fd, event)
            except pycurl.error as exc:
                ret = int(exc.args[0])
            if ret != pycurl.E_CALL_MULTI_PERFORM:
                break
        self._drain()

    def _drain(self) -> None:
        while True:
            queued, ok, failed = self.multi.info_read()
            for easy in ok:
                self._finish(easy, 0, "")
            for easy, errno, message in failed:
                self._finish(easy, errno, message)
            if queued == 0:
                break

    async def close(self) -> None:
        for transfer in list(self._transfers.values()):
            self._end(transfer)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fd, watched in self._fds.items():
            if watched & 1:
                self.loop.remove_reader(fd)
            if watched & 2:
                self.loop.remove_writer(fd)
        self._fds.clear()
        self.multi.close()
        for easy in self._free:
            easy.close()
        self._free.clear()


def addresses_allowed(allow_private: bool, networks: Networks) -> Networks | None:
    """The ``allowed_networks`` argument of :class:`Client` for a config."""
    return None if allow_private else networks

