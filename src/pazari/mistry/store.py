"""The on-disk layout of the original (spec §1.2) and the in-memory job index.

``BP/<p>/pending/<id>`` while a job runs, ``BP/<p>/ready/<id>`` once finished, and absolute
symlinks ``BP/<p>/latest`` / ``BP/<p>/groups/<g>`` to the last successful build. The state
of a job still comes from the filesystem; the index only serves ``/index/`` fast and
paginated (the original re-read every build_info.json per request, spec §2).
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from pazari.mistry.buildinfo import BuildInfo, index_time
from pazari.mistry.names import InvalidName, check_group, check_job_id, check_project

State = Literal["pending", "ready"]
BUILD_INFO = "build_info.json"
OUT_LOG = "out.log"


class Layout:
    """Paths under build_path; every component is validated before it is joined."""

    def __init__(self, build_path: str | Path) -> None:
        self.root = Path(build_path).resolve()

    def project(self, p: str) -> Path:
        return self.root / check_project(p)

    def pending(self, p: str, job_id: str) -> Path:
        return self.project(p) / "pending" / check_job_id(job_id)

    def ready(self, p: str, job_id: str) -> Path:
        return self.project(p) / "ready" / check_job_id(job_id)

    def latest(self, p: str) -> Path:
        return self.project(p) / "latest"

    def group_link(self, p: str, group: str) -> Path:
        return self.project(p) / "groups" / check_group(group)

    def link_for(self, p: str, group: str) -> Path:
        return self.group_link(p, group) if group else self.latest(p)

    def artifacts(self, p: str, job_id: str) -> Path:
        return self.ready(p, job_id) / "data" / "artifacts"

    def bootstrap(self, p: str, group: str) -> None:
        base = self.project(p)
        for sub in ("pending", "ready"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        if group:
            (base / "groups").mkdir(exist_ok=True)

    def state(self, p: str, job_id: str) -> State | None:
        if self.pending(p, job_id).is_dir():
            return "pending"
        if self.ready(p, job_id).is_dir():
            return "ready"
        return None

    def projects(self) -> list[str]:
        """Project dirs under build_path whose names are valid (others are not ours)."""
        try:
            names = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            with contextlib.suppress(InvalidName):
                out.append(check_project(name))
        return out

    def jobs(self, p: str, state: State) -> list[str]:
        try:
            names = [e.name for e in os.scandir(self.project(p) / state)]
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            with contextlib.suppress(InvalidName):
                out.append(check_job_id(name))
        return out

    def link_targets(self, p: str) -> set[str]:
        """Job ids that ``latest`` or a group link points at (never to be removed)."""
        links = [self.latest(p)]
        with contextlib.suppress(FileNotFoundError):
            links += [Path(e.path) for e in os.scandir(self.project(p) / "groups")]
        out = set()
        for link in links:
            with contextlib.suppress(OSError):
                out.add(Path(os.readlink(link)).name)
        return out

    def set_link(self, p: str, group: str, job_id: str) -> None:
        """Point the job's link at ``ready/<id>``: an absolute symlink, replaced atomically."""
        link = self.link_for(p, group)
        tmp = link.with_name(f".{link.name}.tmp-{job_id[:12]}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.ready(p, job_id))
        tmp.replace(link)


def write_build_info(directory: Path, info: BuildInfo) -> None:
    """Atomic replace, so a crash never leaves a half-written build_info.json."""
    tmp = directory / (BUILD_INFO + ".tmp")
    tmp.write_bytes(info.to_json(logs=False))
    tmp.replace(directory / BUILD_INFO)


def read_build_info(directory: Path) -> BuildInfo:
    return BuildInfo.from_json((directory / BUILD_INFO).read_bytes())


def read_log(directory: Path) -> str:
    try:
        return (directory / OUT_LOG).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass
class IndexEntry:
    project: str
    job_id: str
    state: State
    info: BuildInfo
    encoded: bytes  # the entry's /index/ JSON, encoded once

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (-self.info.started_at_ns, self.project, self.job_id)


def _encode(project: str, job_id: str, state: State, info: BuildInfo) -> bytes:
    return orjson.dumps(
        {
            "id": job_id,
            "project": project,
            "startedAt": index_time(info.started_at_ns),
            "buildInfo": info.to_doc(logs=False),
            "state": state,
        }
    )


class JobIndex:
    """Every known job, newest first; entries carry their JSON so ``/index/`` is a join."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], IndexEntry] = {}
        self._order: list[tuple[tuple[int, str, str], IndexEntry]] = []
        # Encoded pages, dropped on any change: the web view polls the same page every 3 s
        # and /index/ with 10k jobs is a 6 MB body that need not be re-joined per request.
        self._pages: dict[tuple[int, int | None, str], bytes] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, project: str, job_id: str, state: State, info: BuildInfo) -> None:
        self.remove(project, job_id)
        self._pages.clear()
        entry = IndexEntry(project, job_id, state, info, _encode(project, job_id, state, info))
        self._entries[(project, job_id)] = entry
        bisect.insort(self._order, (entry.sort_key, entry), key=lambda item: item[0])

    def remove(self, project: str, job_id: str) -> None:
        entry = self._entries.pop((project, job_id), None)
        if entry is None:
            return
        self._pages.clear()
        i = bisect.bisect_left(self._order, entry.sort_key, key=lambda item: item[0])
        while i < len(self._order) and self._order[i][1] is not entry:
            i += 1
        if i < len(self._order):
            del self._order[i]

    def get(self, project: str, job_id: str) -> IndexEntry | None:
        return self._entries.get((project, job_id))

    def page(
        self, offset: int = 0, limit: int | None = None, project: str = ""
    ) -> list[IndexEntry]:
        if project:
            rows = [e for _, e in self._order if e.project == project]
            return rows[offset : None if limit is None else offset + limit]
        end = None if limit is None else offset + limit
        return [e for _, e in self._order[offset:end]]

    def encode_page(self, offset: int = 0, limit: int | None = None, project: str = "") -> bytes:
        key = (offset, limit, project)
        body = self._pages.get(key)
        if body is None:
            body = b"[" + b",".join(e.encoded for e in self.page(offset, limit, project)) + b"]"
            if len(self._pages) >= 64:
                self._pages.clear()
            self._pages[key] = body
        return body

    def entries(self) -> Iterator[IndexEntry]:
        return iter(list(self._entries.values()))

    def load(self, layout: Layout) -> int:
        """Rebuild from disk (startup, and the periodic refresh that also notices builds
        removed by ``mistryd delete-build`` from another process)."""
        self._entries.clear()
        self._order.clear()
        self._pages.clear()
        for p in layout.projects():
            for state in ("pending", "ready"):
                st: State = "pending" if state == "pending" else "ready"
                for job_id in layout.jobs(p, st):
                    directory = layout.project(p) / state / job_id
                    try:
                        info = read_build_info(directory)
                    except (OSError, ValueError):
                        continue  # a pending dir without build_info.json yet (spec §2)
                    self.put(p, job_id, st, info)
        return len(self._entries)
