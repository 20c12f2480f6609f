"""Retention (issues #25, #122; the original had only a btrfs-only contrib script that
ignored ``latest``): per project and group keep the newest ``keep_last`` ready builds and/or
remove ready builds older than ``max_age``. Pending builds and the targets of ``latest`` and
of every group link are never removed."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from pazari.mistry.buildinfo import BuildInfo
from pazari.mistry.filesystem import Filesystem
from pazari.mistry.store import JobIndex, Layout, read_build_info
from pazari.runtime.logs import get_logger

log = get_logger("mistry.janitor")


@dataclass
class Candidate:
    project: str
    job_id: str
    info: BuildInfo


class ProtectedBuild(Exception):
    pass


def select_expired(
    layout: Layout, keep_last: int, max_age_seconds: float, now_ns: int | None = None
) -> list[Candidate]:
    """The ready builds the retention policy removes, oldest first."""
    now_ns = now_ns if now_ns is not None else time.time_ns()
    expired: list[Candidate] = []
    for project in layout.projects():
        protected = layout.link_targets(project)
        by_group: dict[str, list[Candidate]] = defaultdict(list)
        for jid in layout.jobs(project, "ready"):
            try:
                info = read_build_info(layout.ready(project, jid))
            except (OSError, ValueError):
                info = BuildInfo(started_at_ns=0)  # unreadable: as old as it gets
            by_group[info.group].append(Candidate(project, jid, info))
        for builds in by_group.values():
            builds.sort(key=lambda c: c.info.started_at_ns, reverse=True)
            for rank, cand in enumerate(builds):
                if cand.job_id in protected:
                    continue
                too_many = keep_last > 0 and rank >= keep_last
                age = (now_ns - cand.info.started_at_ns) / 1e9
                too_old = max_age_seconds > 0 and age > max_age_seconds
                if too_many or too_old:
                    expired.append(cand)
    expired.sort(key=lambda c: c.info.started_at_ns)
    return expired


async def delete_build(
    layout: Layout, fs: Filesystem, project: str, job_id: str, index: JobIndex | None = None
) -> None:
    """Remove one ready build, refusing a link target or a pending build (#122)."""
    if layout.state(project, job_id) == "pending":
        raise ProtectedBuild(f"{project}/{job_id} is pending")
    if job_id in layout.link_targets(project):
        raise ProtectedBuild(f"{project}/{job_id} is the target of latest or a group link")
    ready = layout.ready(project, job_id)
    if not ready.exists():
        raise FileNotFoundError(f"{project}/{job_id} not found")
    await fs.remove(ready)
    if index is not None:
        index.remove(project, job_id)


async def sweep(
    layout: Layout,
    fs: Filesystem,
    keep_last: int,
    max_age_seconds: float,
    index: JobIndex | None = None,
) -> int:
    removed = 0
    for cand in select_expired(layout, keep_last, max_age_seconds):
        try:
            await delete_build(layout, fs, cand.project, cand.job_id, index)
        except (ProtectedBuild, FileNotFoundError):
            continue
        removed += 1
    if removed:
        log.info("retention removed %d builds", removed)
    return removed
