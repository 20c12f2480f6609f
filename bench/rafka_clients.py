"""Lean RESP load clients for the rafka benchmarks: pre-encoded requests and hiredis replies,
so the client costs as little as possible and the servers under test set the pace."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import hiredis

from pazari.resp import encode_command


def pipeline(host: str, port: int, payload: bytes, replies: int, setup: bytes = b"") -> float:
    """Send ``payload`` (``replies`` commands) pipelined; seconds until the last reply."""
    with socket.create_connection((host, port)) as sock:
        reader = hiredis.Reader()
        if setup:
            sock.sendall(setup)
            _read_n(sock, reader, setup.count(b"\r\n*") + 1 if setup.startswith(b"*") else 1)
        errors: list[Any] = []

        def send() -> None:
            try:
                view = memoryview(payload)
                for i in range(0, len(view), 1 << 18):
                    sock.sendall(view[i : i + (1 << 18)])
            except OSError as exc:
                errors.append(exc)

        start = time.perf_counter()
        sender = threading.Thread(target=send)
        sender.start()
        got = _read_n(sock, reader, replies)
        elapsed = time.perf_counter() - start
        sender.join()
        assert not errors, errors
        bad = [r for r in got if isinstance(r, hiredis.ReplyError)]
        assert not bad, bad[:3]
        return elapsed


def pipeline_expect(host: str, port: int, payload: bytes, expected: bytes) -> float:
    """Send ``payload`` pipelined and read until ``expected`` (the exact reply bytes) has
    arrived; seconds taken. Comparing bytes keeps the client's own cost out of the way."""
    with socket.create_connection((host, port)) as sock:
        chunks: list[bytes] = []

        def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(view), 1 << 18):
                sock.sendall(view[i : i + (1 << 18)])

        start = time.perf_counter()
        sender = threading.Thread(target=send)
        sender.start()
        got = 0
        while got < len(expected):
            data = sock.recv(1 << 20)
            if not data:
                break
            chunks.append(data)
            got += len(data)
        elapsed = time.perf_counter() - start
        sender.join()
    received = b"".join(chunks)
    assert received == expected, received[:200]
    return elapsed


def _read_n(sock: socket.socket, reader: Any, n: int) -> list[Any]:
    out: list[Any] = []
    while len(out) < n:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            out.append(reply)
    return out


def command(host: str, port: int, *args: bytes | str) -> Any:
    with socket.create_connection((host, port)) as sock:
        sock.sendall(encode_command(*args))
        return _read_n(sock, hiredis.Reader(), 1)[0]
