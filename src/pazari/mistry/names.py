"""Validation of every name that becomes a path component or a Docker name.

The original used project, group and param names raw (spec §8: path traversal, a ``/`` in a
group broke the layout). Every name is checked here, once, before any path is built.
"""

from __future__ import annotations

import re

# A project name is a directory under projects_path and the image tag ``mistry-<p>``, so it
# must be a lowercase Docker repository component (spec §1.1).
_PROJECT = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,126}[a-z0-9])?")
# A group is one path component (``groups/<group>``): branch-like names, never ``.``/``..``.
_GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}")
# A param is a file name under /data/params; ``@`` is allowed (the client's table, §3).
_PARAM = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.@+-]{0,127}")
_JOB_ID = re.compile(r"[0-9a-f]{64}")


class InvalidName(ValueError):
    """A name that may not be used; the server answers 400 with ``str(exc)``."""


def check_project(name: str) -> str:
    if not isinstance(name, str) or not _PROJECT.fullmatch(name):
        raise InvalidName(f"invalid project name {name!r}")
    return name


def check_group(name: str) -> str:
    """The empty group means "no group" (spec §1.5)."""
    if name == "":
        return name
    if not isinstance(name, str) or not _GROUP.fullmatch(name):
        raise InvalidName(f"invalid group name {name!r}")
    return name


def check_param(name: str) -> str:
    if not isinstance(name, str) or not _PARAM.fullmatch(name):
        raise InvalidName(f"invalid param name {name!r}")
    return name


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidName(f"invalid job id {job_id!r}")
    return job_id


def is_opaque(param: str) -> bool:
    """``_``-prefixed params are written to /data/params but left out of the id (§1.3)."""
    return param.startswith("_")
