"""The client's extraction refuses what a hostile server could send (issue 10), whatever
the server: crafted tars fed to ``extract_tar``, and once through the ``mistry`` binary
against a hostile HTTP server."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pazari.mistry.client import ClientError, extract_tar
from tests.mistry.conftest import MISTRY

Member = tuple[str, Callable[[tarfile.TarInfo], None], bytes]


def _sym(target: str) -> Callable[[tarfile.TarInfo], None]:
    def setup(info: tarfile.TarInfo) -> None:
        info.type, info.linkname = tarfile.SYMTYPE, target

    return setup


def _hard(target: str) -> Callable[[tarfile.TarInfo], None]:
    def setup(info: tarfile.TarInfo) -> None:
        info.type, info.linkname = tarfile.LNKTYPE, target

    return setup


def _mode(mode: int) -> Callable[[tarfile.TarInfo], None]:
    def setup(info: tarfile.TarInfo) -> None:
        info.mode = mode

    return setup


def _type(kind: bytes) -> Callable[[tarfile.TarInfo], None]:
    def setup(info: tarfile.TarInfo) -> None:
        info.type = kind

    return setup


def make_tar(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, setup, data in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            setup(info)
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _plain(info: tarfile.TarInfo) -> None:
    pass


REFUSED = [
    ("absolute_symlink", [("etc", _sym("/etc"), b"")], "absolute link"),
    ("symlink_leaving_target", [("up", _sym("../../outside"), b"")], "leaves the target"),
    (
        "symlink_leaving_through_a_shallower_link",
        [
            ("d1/d2/x", _sym("../../top"), b""),
            ("a", _sym("d1/d2/x/../../.."), b""),
        ],
        "refusing",
    ),
    ("absolute_name", [("/tmp/evil", _plain, b"x")], "leaves the target"),
    ("dotdot_name", [("../evil", _plain, b"x")], "leaves the target"),
    ("hardlink_to_absolute", [("h", _hard("/etc/passwd"), b"")], "absolute link"),
    ("hardlink_leaving_target", [("h", _hard("../x"), b"")], "leaves the target"),
    ("char_device", [("null", _type(tarfile.CHRTYPE), b"")], "device files"),
    ("block_device", [("sda", _type(tarfile.BLKTYPE), b"")], "device files"),
    ("fifo", [("f", _type(tarfile.FIFOTYPE), b"")], "fifos"),
    ("setuid_file", [("suid", _mode(0o4755), b"x")], "setuid"),
    ("setgid_file", [("sgid", _mode(0o2755), b"x")], "setuid"),
    (
        "file_through_earlier_symlink",
        [("l", _sym("."), b""), ("l/../../evil", _plain, b"x")],
        "leaves the target",
    ),
]


@pytest.mark.parametrize(("members", "says"), [(m, s) for _, m, s in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_extract_refuses_hostile_member(members: list[Member], says: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    outside = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ClientError) as err:
        extract_tar(io.BytesIO(make_tar(members)), target)
    assert says in str(err.value)
    assert "refusing the artifacts" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    for dirpath, _, files in os.walk(target):
        for name in files:
            assert not os.lstat(os.path.join(dirpath, name)).st_mode & stat.S_ISUID


def test_extract_keeps_links_inside_and_odd_names(tmp_path: Path) -> None:
    members: list[Member] = [
        ("dir/file", _plain, b"content"),
        ("dir/link", _sym("file"), b""),
        ("top", _sym("dir/file"), b""),
        ("new\nline", _plain, b"nl"),
        ("exec", _mode(0o755), b"#!/bin/sh\n"),
    ]
    assert extract_tar(io.BytesIO(make_tar(members)), tmp_path) == 3
    assert (tmp_path / "dir" / "link").read_bytes() == b"content"
    assert os.readlink(tmp_path / "top") == "dir/file"
    assert (tmp_path / "new\nline").read_bytes() == b"nl"
    assert os.access(tmp_path / "exec", os.X_OK)


@pytest.fixture
def hostile_server() -> Iterator[str]:
    """A server that answers POST /jobs like mistryd and serves a tar with /etc link."""
    tar = make_tar([("ok", _plain, b"x"), ("passwd", _sym("/etc/passwd"), b"")])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps({"ExitCode": 0, "URL": "job/p/" + "a" * 64}).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(tar)))
            self.end_headers()
            self.wfile.write(tar)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield str(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_client_refuses_absolute_link_from_hostile_server(
    hostile_server: str, tmp_path: Path
) -> None:
    target = tmp_path / "t"
    done = subprocess.run(
        [MISTRY, "build", "--host", "127.0.0.1", "--port", hostile_server,
         "--project", "p", "--target", str(target)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "refusing the artifacts: 'passwd': absolute link to '/etc/passwd'" in done.stderr
    assert not os.path.lexists(target / "passwd")
