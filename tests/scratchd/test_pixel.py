"""The raw pixel fast path (pixel.py) on a real scratchd: pipelining, split heads, HTTP/1.0,
``Connection: close``, and the hand-over of everything else to aiohttp on the same
connection, answers in request order."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pazari.scratchd.app import GIF
from tests.scratchd.conftest import read_file_sink, tenant
from tests.support.ports import wait_for


@pytest.fixture
def port(scratchd: Callable[..., Any], tmp_path: Path) -> int:
    config = {"tenants": [tenant("a", ["a.test"], ["file"]),
                          tenant("r", ["r.test"], ["file"], ack="received"),
                          tenant("t", ["t.test"], ["file"], allow_tenant_param=True)],
              "sinks": {"file": {"type": "file", "path": str(tmp_path / "events")}}}
    _, http = scratchd(config)
    p: int = http.port
    return p


def _pixel(n: int, host: str = "a.test", extra: str = "") -> bytes:
    return (f"GET /track?n={n} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0\r\n"
            f"Cookie: _sv=visitor-000{n}\r\n{extra}\r\n").encode()


class Conn:
    """A raw connection that reads responses one by one (Content-Length framing)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send(self, data: bytes, step: int = 0) -> None:
        if not step:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        return self.buf == b"" and self.sock.recv(1) == b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed early; buffered {self.buf!r}"
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("host", ["a.test", "r.test"], ids=["spooled", "received"])
def test_pipelined_pixels_then_other_endpoints_answer_in_order(port: int, host: str,
                                                               tmp_path: Path) -> None:
    conn = Conn(port)
    requests = b"".join(_pixel(n, host) for n in range(20))
    requests += f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    requests += _pixel(20, host)  # after the hand-over: aiohttp's pixel handler answers it
    requests += (f"POST /track HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\n\r\n"
                 '{"n":"21"}').encode()
    conn.send(requests)
    for _ in range(20):
        status, headers, body = conn.response()
        assert (status, body, headers["content-type"]) == (200, GIF, "image/gif")
        assert headers["cache-control"] == "no-store" and "date" in headers
    assert conn.response()[::2] == (200, b"ok\n")
    assert conn.response()[::2] == (200, GIF)
    assert conn.response()[0] == 204
    conn.close()
    wait_for(lambda: len(read_file_sink(tmp_path / "events")) == 22, 10, "22 events")
    events = read_file_sink(tmp_path / "events")
    assert sorted(int(e["params"]["n"]) for e in events) == list(range(22))


@pytest.mark.parametrize("step", [1, 7, 100], ids=["bytewise", "7-bytes", "100-bytes"])
def test_split_heads(port: int, step: int, tmp_path: Path) -> None:
    conn = Conn(port)
    conn.send(_pixel(1) + _pixel(2), step=step)
    assert [conn.response()[2] for _ in range(2)] == [GIF, GIF]
    conn.close()
    wait_for(lambda: len(read_file_sink(tmp_path / "events")) == 2, 10, "two events")


CLOSING = [
    ("connection close", "HTTP/1.1", "Connection: close\r\n", "close"),
    ("http/1.0", "HTTP/1.0", "", "close"),
    ("http/1.0 keep-alive", "HTTP/1.0", "Connection: keep-alive\r\n", "keep-alive"),
]


@pytest.mark.parametrize(("version", "extra", "expect"), [c[1:] for c in CLOSING],
                         ids=[c[0] for c in CLOSING])
def test_connection_persistence(port: int, version: str, extra: str, expect: str) -> None:
    conn = Conn(port)
    conn.send(_pixel(1, extra=extra).replace(b"HTTP/1.1", version.encode()))
    status, headers, body = conn.response()
    assert (status, body, headers["connection"]) == (200, GIF, expect)
    if expect == "close":
        assert conn.closed()
    else:
        conn.send(_pixel(2, extra=extra).replace(b"HTTP/1.1", version.encode()))
        assert conn.response()[2] == GIF
    conn.close()


HANDED_OVER = [
    ("unknown host", _pixel(1, "nobody.test"), 404, b"unknown host"),
    ("tenant parameter for a tenant not serving the host",
     b"GET /track?tenant=a&x=1 HTTP/1.1\r\nHost: t.test\r\n\r\n", 404, b"does not serve"),
    ("get with a body", _pixel(1, extra="Content-Length: 2\r\n") + b"{}", 200, GIF),
    ("bad header", b"GET /track?x=1 HTTP/1.1\r\nHost: a.test\r\nBad Header: x\r\n\r\n", 400,
     b""),
    ("delete", b"DELETE /track HTTP/1.1\r\nHost: a.test\r\n\r\n", 405, b"not allowed"),
    ("other path", b"GET /trackx HTTP/1.1\r\nHost: a.test\r\n\r\n", 404, b"no such endpoint"),
]


@pytest.mark.parametrize(("request_bytes", "status", "body"), [c[1:] for c in HANDED_OVER],
                         ids=[c[0] for c in HANDED_OVER])
def test_everything_else_goes_to_aiohttp(port: int, request_bytes: bytes, status: int,
                                         body: bytes) -> None:
    conn = Conn(port)
    conn.send(_pixel(0) + request_bytes)
    assert conn.response()[2] == GIF
    got_status, _, got_body = conn.response()
    assert got_status == status and body in got_body
    conn.close()


def test_set_cookie_for_a_new_visitor(port: int) -> None:
    conn = Conn(port)
    conn.send(b"GET /track?x=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    _, headers, body = conn.response()
    assert body == GIF and headers["set-cookie"].startswith("_sv=")
    assert "SameSite=Lax" in headers["set-cookie"]
    conn.close()


def test_keep_alive_requests_identify_each_client_anew(port: int, tmp_path: Path) -> None:
    """Issue 17's per-connection client cache never carries one request's identity to
    another: a repeated head keeps its visitor, a new cookie is that visitor, a missing or
    invalid cookie mints a new visitor (and Set-Cookie) every time; DNT under the default
    ``dnt: "ignore"`` is another head of the same visitor."""
    vid = "0189aaaa-0000-7000-8000-00000000000"
    heads = [("c0", f"Cookie: _sv={vid}1\r\n"), ("c1", f"Cookie: _sv={vid}1\r\n"),
             ("c2", f"Cookie: _sv={vid}2\r\n"), ("c3", "Cookie: _sv=bad\r\n"),
             ("c4", "Cookie: _sv=bad\r\n"), ("c5", ""), ("c6", ""),
             ("c7", f"Cookie: _sv={vid}2\r\nDNT: 1\r\n"),
             ("c8", f"Cookie: _sv={vid}2\r\n")]
    conn = Conn(port)
    cookies = []
    for n, extra in heads:
        conn.send(f"GET /track?n={n} HTTP/1.1\r\nHost: a.test\r\nUser-Agent: UA\r\n{extra}\r\n"
                  .encode())
        status, headers, _ = conn.response()
        assert status == 200
        cookies.append(headers.get("set-cookie"))
    conn.close()
    out = tmp_path / "events"
    wait_for(lambda: len(read_file_sink(out)) == len(heads), 20, "every pixel in the sink")
    seen = {e["params"]["n"]: e["visitor_id"] for e in read_file_sink(out)}
    assert seen["c0"] == seen["c1"] == vid + "1"
    assert seen["c2"] == seen["c7"] == seen["c8"] == vid + "2"
    minted = [seen[n] for n in ("c3", "c4", "c5", "c6")]
    assert len(set(minted)) == 4 and not set(minted) & {vid + "1", vid + "2"}
    assert [c is not None for c in cookies] == [False, False, False, True, True, True, True,
                                                False, False]


LEAN_REQUEST_LINES = [
    ("fragment", b"GET /track?n=frag#x HTTP/1.1", 200, "frag"),
    ("two spaces before the version", b"GET /track?n=spaces  HTTP/1.1", 200, "spaces"),
    ("control byte in the target", b"GET /track?n=\x01 HTTP/1.1", 400, None),
    ("bad version", b"GET /track?n=v HTTP/1.10", 400, None),
]


@pytest.mark.parametrize(("line", "status", "n"), [c[1:] for c in LEAN_REQUEST_LINES],
                         ids=[c[0] for c in LEAN_REQUEST_LINES])
def test_repeated_header_lines_still_check_each_request_line(port: int, tmp_path: Path,
                                                             line: bytes, status: int,
                                                             n: str | None) -> None:
    """Issue 17: while a connection's header lines repeat, its heads skip the header
    callbacks, not llhttp's checks or the target's parse: each request line is read anew."""
    lines = b"\r\nHost: a.test\r\nUser-Agent: UA\r\nCookie: _sv=visitor-0001\r\n\r\n"
    conn = Conn(port)
    conn.send(b"GET /track?n=first HTTP/1.1" + lines)
    assert conn.response()[0] == 200
    conn.send(line + lines)
    assert conn.response()[0] == status
    conn.close()
    out = tmp_path / "events"
    expected = ["first"] if n is None else ["first", n]
    wait_for(lambda: len(read_file_sink(out)) == len(expected), 20, "the pixels in the sink")
    assert [e["params"]["n"] for e in read_file_sink(out)] == expected
