"""``mistryd rsync-check`` (the rsync module's ``pre-xfer exec``, issue 10) on a build_path
laid out by hand: what it lets through and why it refuses. The daemon end to end is in
``test_hostile_builds.py::test_rsync_*``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pazari.mistry.artifacts import check_rsync_request
from tests.mistry.conftest import MISTRYD

JOB = "a" * 64
OTHER = "b" * 64


def env(root: Path, *paths: str) -> dict[str, str]:
    """The environment rsyncd gives a pre-xfer exec: the module path and its server argv
    (as rsync 3.5.0 passed them for ``rsync -rtlp rsync://host/mistry/<path>``)."""
    argv = ["rsyncd", "--server", "--sender", "-ltpre.iLsfxCIvu", ".", *paths]
    doc = {f"RSYNC_ARG{i}": arg for i, arg in enumerate(argv)}
    return doc | {"RSYNC_MODULE_PATH": str(root), "RSYNC_MODULE_NAME": "mistry"}


@pytest.fixture
def build_path(tmp_path: Path) -> Path:
    root = tmp_path / "builds"
    (root / "p" / "ready" / JOB / "data" / "artifacts").mkdir(parents=True)
    other = root / "p" / "ready" / OTHER
    other.mkdir()
    return root


def artifacts_link(root: Path, target: str) -> None:
    os.makedirs(root / "p" / "ready" / OTHER / "data", exist_ok=True)
    os.symlink(target, root / "p" / "ready" / OTHER / "data" / "artifacts")


CASES = [
    # (id, requested paths, how the other build's artifacts are made, refusal or "")
    ("real_artifacts", [f"/p/ready/{JOB}/data/artifacts/"], None, ""),
    ("without_slashes", [f"p/ready/{JOB}/data/artifacts"], None, ""),
    ("the_top", ["/"], None, "only <project>/ready/<id>/data/artifacts/ is served"),
    ("a_build_dir", [f"/p/ready/{JOB}/"], None, "only <project>/ready/<id>/data/"),
    ("its_cache", [f"/p/ready/{JOB}/data/cache/"], None, "only <project>/ready/<id>/data/"),
    ("below_artifacts", [f"/p/ready/{JOB}/data/artifacts/x"], None, "only <project>/"),
    ("dotdot", [f"/p/ready/../ready/{JOB}/data/artifacts/"], None, "only <project>/"),
    ("two_paths", [f"/p/ready/{JOB}/data/artifacts/"] * 2, None, "ask for one build's"),
    ("bad_job_id", ["/p/ready/nope/data/artifacts/"], None, "invalid job id"),
    ("bad_project", [f"/.p/ready/{JOB}/data/artifacts/"], None, "invalid project name"),
    ("missing_build", [f"/p/ready/{'c' * 64}/data/artifacts/"], None, "No such file"),
    ("abs_link", [f"/p/ready/{OTHER}/data/artifacts/"], "/etc", "is a symlink"),
    (
        "rel_link",
        [f"/p/ready/{OTHER}/data/artifacts/"],
        f"../../{JOB}/data/artifacts",
        "is a symlink",
    ),
    ("dangling_link", [f"/p/ready/{OTHER}/data/artifacts/"], "/nonexistent", "is a symlink"),
]


@pytest.mark.parametrize(
    ("paths", "link", "refused"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_rsync_check(build_path: Path, paths: list[str], link: str | None, refused: str) -> None:
    if link is not None:
        artifacts_link(build_path, link)
    why = check_rsync_request(env(build_path, *paths))
    if refused:
        assert refused in why, why
    else:
        assert why == ""


def test_no_transfer_request(build_path: Path) -> None:
    assert check_rsync_request({"RSYNC_MODULE_PATH": str(build_path)}) == (
        "refusing: not a transfer request"
    )


def test_data_that_is_a_file(build_path: Path) -> None:
    (build_path / "p" / "ready" / OTHER / "data").write_text("x")
    why = check_rsync_request(env(build_path, f"/p/ready/{OTHER}/data/artifacts/"))
    assert why == "refusing to serve: data/ is not a directory"


@pytest.mark.parametrize(
    ("path", "code", "says"),
    [
        (f"/p/ready/{JOB}/data/artifacts/", 0, ""),
        (f"/p/ready/{OTHER}/data/artifacts/", 1, "refusing to serve: data/artifacts is a symlink"),
    ],
)
def test_the_subcommand(build_path: Path, path: str, code: int, says: str) -> None:
    """rsync shows a failing pre-xfer exec's stdout to the client; no config is read."""
    artifacts_link(build_path, "/etc")
    done = subprocess.run([MISTRYD, "rsync-check"], env=env(build_path, path),
                          capture_output=True, text=True, timeout=30, cwd=build_path)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert says in done.stdout
