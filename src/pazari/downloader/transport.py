"""What the downloads and the callbacks need from an HTTP transport
(:mod:`pazari.downloader.curl`, libcurl's multi interface on the loop): ``request()`` returns
once the response head is in, the body goes to a sink, and failures are these exceptions,
whose texts read like Go's net/http errors for the same case. :mod:`pazari.downloader.fetch`
and the HTTP callback backend name only this interface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

Sink = Callable[[bytes], None]
#: (host, port) -> the addresses to dial, in order; may raise to refuse the host.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class HTTPClientError(Exception):
    """No (complete) response: the text reads like Go's net/http error for the same case."""


class ConnectError(HTTPClientError):
    pass


class TLSError(ConnectError):
    pass


class ReadTimeout(HTTPClientError):
    pass


class DeadlineExceeded(HTTPClientError):
    """The caller's deadline for the whole exchange passed (see ``Client.request``)."""


class ResponseError(HTTPClientError):
    """A malformed response, or the connection ended before the response did."""


class InvalidRequest(HTTPClientError, ValueError):
    pass


class TooLarge(ResponseError):
    """The body (announced or received) exceeds the client's maximum file size."""


class Room(Protocol):
    """Backpressure from a sink that hands its bytes on, such as a file written by a worker
    thread: while ``full()`` the transport holds the body back (libcurl keeps it, paused),
    and ``when_room(callback)`` has ``callback`` called on the loop once there is room."""

    def full(self) -> bool: ...

    def when_room(self, callback: Callable[[], None]) -> None: ...


class Response(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # lower-case name -> first value

    @property
    def content_length(self) -> int | None: ...

    async def stream(self, sink: Sink, room: Room | None = None) -> None: ...

    def release(self) -> None: ...


class Client(Protocol):
    async def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                      body: bytes | None = None, proxy: str = "",
                      deadline: float | None = None) -> Response: ...

    async def close(self) -> None: ...
