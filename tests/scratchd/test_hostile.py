"""scratchd under hostile clients and a hostile network (issue 12): every finding is attacked
over raw sockets against the real ``scratchd`` console script, and each test ends with the
server alive and every acknowledged event in the sink."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scratchd.conftest import read_file_sink, tenant
from tests.support.ports import wait_for

HEAD = ("POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 test\r\n"
        "Content-Type: application/x-ndjson\r\n{extra}\r\n")


def post(port: int, path: str, body: bytes, segment: int, gap: float,
         host: str = "a.test", chunked: bool = False) -> tuple[int, Any]:
    """POST ``body`` in ``segment``-byte TCP segments ``gap`` seconds apart (or as chunks of
    that size with ``chunked``); returns (status, parsed JSON or None)."""
    if chunked:
        head = HEAD.format(path=path, host=host, extra="Transfer-Encoding: chunked\r\n")
        pieces = [b"%x\r\n%s\r\n" % (len(body[i:i + segment]), body[i:i + segment])
                  for i in range(0, len(body), segment)] + [b"0\r\n\r\n"]
    else:
        head = HEAD.format(path=path, host=host, extra=f"Content-Length: {len(body)}\r\n")
        pieces = [body[i:i + segment] for i in range(0, len(body), segment)]
    return exchange(port, [head.encode(), *pieces], gap)


def exchange(port: int, parts: list[bytes], gap: float = 0.0) -> tuple[int, Any]:
    """Send ``parts`` as separate TCP segments (TCP_NODELAY, ``gap`` seconds apart) and read
    one response: (status, parsed JSON body, or the raw bytes, or None when empty)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i, part in enumerate(parts):
            if i and gap:
                time.sleep(gap)
            sock.sendall(part)
        response = http.client.HTTPResponse(sock)
        response.begin()
        data = response.read()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data
    finally:
        sock.close()


def ndjson(n: int, tag: str = "e") -> bytes:
    return b"".join(b'{"n": %d, "tag": "%s", "pad": "%s"}\n' % (i, tag.encode(), b"x" * 20)
                    for i in range(n))


@pytest.fixture
def collector(scratchd: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[Any, Any, Path]]:
    out = tmp_path / "events"
    config = {
        "tenants": [tenant("a", ["a.test"], ["file"], max_batch_events=5000,
                           max_body_bytes=4 << 20)],
        "sinks": {"file": {"type": "file", "path": str(out)}},
    }
    daemon, http = scratchd(config)
    yield daemon, http, out
    assert daemon.running, "scratchd died"
    http.close()


def _sink_tags(out: Path) -> list[str]:
    return [e["params"]["tag"] for e in read_file_sink(out)]


SEGMENTED = [
    ("ndjson_two_segments_200ms", "/batch", ndjson(100), 2800, 0.2, False, 100),
    ("ndjson_3000_lines_64k_segments", "/batch", ndjson(3000), 65536, 0.02, False, 3000),
    ("ndjson_byte_by_byte_head_of_body", "/batch", ndjson(5), 7, 0.005, False, 5),
    ("array_three_segments", "/batch",
     b"[" + b",".join(ndjson(300).splitlines()) + b"]", 4000, 0.05, False, 300),
    ("chunked_ndjson_slow", "/batch", ndjson(400), 1000, 0.005, True, 400),
    ("chunked_3000_lines_64k", "/batch", ndjson(3000), 65536, 0.01, True, 3000),
    ("track_object_split", "/track", b'{"n": 1, "tag": "t", "pad": "%s"}' % (b"y" * 3000),
     1000, 0.1, False, 1),
    ("track_object_chunked", "/track", b'{"n": 1, "tag": "t", "pad": "%s"}' % (b"y" * 3000),
     500, 0.02, True, 1),
]


@pytest.mark.parametrize(("name", "path", "body", "segment", "gap", "chunked", "expect"),
                         SEGMENTED, ids=[case[0] for case in SEGMENTED])
def test_body_in_many_segments_is_read_whole(
    collector: tuple[Any, Any, Path], name: str, path: str, body: bytes, segment: int,
    gap: float, chunked: bool, expect: int,
) -> None:
    _, http, out = collector
    status, doc = post(http.port, path, body, segment, gap, chunked=chunked)
    if path == "/batch":
        assert status == 200, doc
        assert doc == {"accepted": expect, "rejected": []}
    else:
        assert status == 204
    wait_for(lambda: len(read_file_sink(out)) == expect, 20, f"{expect} events in the sink")
    assert sorted(int(e["params"]["n"]) for e in read_file_sink(out)) == \
        sorted(json.loads(line)["n"] for line in body.strip(b"[]").replace(b"},{", b"}\n{")
               .splitlines())


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_body_over_max_body_bytes_in_segments_is_refused(
    scratchd: Callable[..., Any], tmp_path: Path, chunked: bool
) -> None:
    out = tmp_path / "events"
    config = {"tenants": [tenant("a", ["a.test"], ["file"], max_body_bytes=10_000,
                                 max_batch_events=5000)],
              "sinks": {"file": {"type": "file", "path": str(out)}}}
    daemon, http = scratchd(config)
    assert daemon.running
    status, doc = post(http.port, "/batch", ndjson(1000), 4096, 0.0, chunked=chunked)
    assert status == 400 and "too large" in doc["error"]
    assert http.request("GET", "/healthz").status == 200
    assert read_file_sink(out) == []
