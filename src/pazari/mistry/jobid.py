"""Content-addressed job ids and the project snapshot they are computed over.

Spec §1.3 describes the original's seed as ``project + group + k1 + v1 + ... + tar(project)``:
no separators (``{"a":"bc"}`` and ``{"ab":"c"}`` collided) and tar headers carrying mtimes and
owners (ids changed across checkouts). Here every field is length-prefixed and a project
file contributes only its relative path, its executable bit (git keeps it, and it changes
what the image does) and the sha256 of its contents. Per-file digests are memoised by stat
signature, so a cache hit does not re-read unchanged files.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pazari.mistry.names import is_opaque

_DOMAIN = b"pazari-mistry-job-v2\0"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ProjectFile:
    relpath: str  # "/"-separated, relative to the project dir
    path: str
    mode: int
    size: int


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def project_files(root: str | Path) -> list[ProjectFile]:
    """Every regular file under ``root`` in lexical order of relative path; like the
    original's tar, directories and symlinks are not entries (symlinks are not followed)."""
    out: list[ProjectFile] = []

    def walk(directory: str, prefix: str) -> None:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path, rel + "/")
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                out.append(ProjectFile(rel, entry.path, st.st_mode, st.st_size))

    walk(str(root), "")
    return out


class DigestCache:
    """sha256 of file contents, reused while (size, mtime, ctime, inode) are unchanged."""

    def __init__(self, limit: int = 100_000) -> None:
        self._digests: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}
        self._limit = limit

    def remember(self, path: str, st: os.stat_result, digest: bytes) -> None:
        if len(self._digests) >= self._limit:
            self._digests.clear()
        self._digests[path] = ((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino), digest)

    def digest(self, path: str) -> bytes:
        st = os.stat(path, follow_symlinks=False)
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        hit = self._digests.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = h.digest()
        if len(self._digests) >= self._limit:
            self._digests.clear()
        self._digests[path] = (key, digest)
        return digest


def _id_hash(
    project: str, group: str, params: Mapping[str, str], files: list[tuple[str, bool, bytes]]
) -> str:
    h = hashlib.sha256(_DOMAIN)
    h.update(_field(project.encode()))
    h.update(_field(group.encode()))
    visible = sorted(k for k in params if not is_opaque(k))
    h.update(len(visible).to_bytes(8, "big"))
    for key in visible:
        h.update(_field(key.encode()))
        h.update(_field(params[key].encode()))
    h.update(len(files).to_bytes(8, "big"))
    for relpath, executable, digest in files:
        h.update(_field(relpath.encode()))
        h.update(b"x" if executable else b"-")
        h.update(digest)
    return h.hexdigest()


def job_id(
    project: str,
    group: str,
    params: Mapping[str, str],
    project_dir: str | Path,
    cache: DigestCache | None = None,
) -> str:
    """Lowercase hex sha256 over project, group, sorted non-opaque params and the files."""
    cache = cache or DigestCache()
    files = [
        (f.relpath, bool(f.mode & stat.S_IXUSR), cache.digest(f.path))
        for f in project_files(project_dir)
    ]
    return _id_hash(project, group, params, files)


def snapshot(
    project: str,
    group: str,
    params: Mapping[str, str],
    project_dir: str | Path,
    cache: DigestCache | None = None,
) -> tuple[str, bytes]:
    """The job id and the build context from ONE read of the project dir (issue 10): each
    file is read once, and both its digest and its tar entry come from those bytes, so a
    project edited while a job waits can never be built under an id of other contents.
    The digests read go into ``cache``."""
    buf = io.BytesIO()
    files: list[tuple[str, bool, bytes]] = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in project_files(project_dir):
            try:
                fd = os.open(f.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # removed since the listing
            with open(fd, "rb", closefd=True) as fh:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    continue
                data = fh.read()
            digest = hashlib.sha256(data).digest()
            if cache is not None:
                cache.remember(f.path, st, digest)
            executable = bool(st.st_mode & stat.S_IXUSR)
            files.append((f.relpath, executable, digest))
            info = tarfile.TarInfo(f.relpath)
            info.size = len(data)
            info.mode = 0o755 if executable else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return _id_hash(project, group, params, files), buf.getvalue()


def build_context(project_dir: str | Path) -> bytes:
    """The Docker build context: a tar of the project's regular files (subdirectories kept,
    PR #125), with owner and mtime normalised so that the engine's layer cache depends only
    on what the id depends on."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in project_files(project_dir):
            info = tarfile.TarInfo(f.relpath)
            info.size = f.size
            info.mode = 0o755 if f.mode & stat.S_IXUSR else 0o644
            info.mtime = 0
            with open(f.path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()
