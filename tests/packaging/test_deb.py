"""``make deb``'s package: its metadata and layout, lintian, and two builds giving one file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.packaging.conftest import build
from tests.support.services import require_binary

# Each session builds the package (about a minute and a half on 2 cores).
pytestmark = pytest.mark.slow

UNITS = ["rafka.service", "scratchd.service", "downloader@.service", "mistryd.service"]


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_control_fields(deb_package: Path) -> None:
    fields = dict(
        line.split(": ", 1)
        for line in _dpkg_deb("-f", str(deb_package)).splitlines()
        if ": " in line and not line.startswith(" ")
    )
    assert fields["Package"] == "pazari"
    assert fields["Architecture"] == "amd64"
    # The venv's extensions are cp311: 3.12 would not load them.
    assert fields["Depends"] == "python3 (>= 3.11), python3 (<< 3.12), libc6 (>= 2.34)"
    assert fields["Recommends"] == "redis-server, podman"


def test_layout_and_conffiles(deb_package: Path) -> None:
    listing = _dpkg_deb("-c", str(deb_package))
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    owners = {line.split()[1] for line in listing.splitlines()}
    assert owners == {"root/root"}
    for unit in UNITS:
        assert f"/lib/systemd/system/{unit}" in paths
    assert "/usr/lib/sysusers.d/pazari.conf" in paths
    assert "/usr/lib/tmpfiles.d/pazari.conf" in paths
    for script in ("rafka", "scratchd", "downloader", "mistryd", "mistry"):
        assert f"/opt/pazari/bin/{script}" in paths
    assert "/opt/pazari/pyvenv.cfg" in paths
    # Bytecode is written by postinst, never shipped (it would name the build paths).
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    compiled = [p for p in paths if "/site-packages/pazari/" in p and p.endswith(".so")]
    assert compiled, "the wheel's Cython extensions are missing"
    conffiles = set(_ctrl(deb_package, "conffiles").split())
    assert conffiles == {p for p in paths if p.startswith("/etc/pazari/") and not p.endswith("/")}
    assert {"/etc/pazari/rafka.json", "/etc/pazari/downloader.json", "/etc/pazari/scratchd.json",
            "/etc/pazari/mistry.json", "/etc/pazari/README"} <= conffiles  # fmt: skip


def _ctrl(deb: Path, member: str) -> str:
    return subprocess.run(["dpkg-deb", "-I", str(deb), member], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def test_no_build_path_inside(deb_package: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb_package), str(tmp_path)], check=True)
    venv = tmp_path / "opt/pazari"
    assert (venv / "bin/python3").readlink() == Path("/usr/bin/python3")
    assert "command = /usr/bin/python3 -m venv --without-pip /opt/pazari" in (
        venv / "pyvenv.cfg").read_text()
    assert (venv / "bin/rafka").read_text().startswith("#!/opt/pazari/bin/python3\n")
    found = subprocess.run(["grep", "-rlF", "build/deb", str(tmp_path)], capture_output=True,
                           text=True).stdout  # fmt: skip
    assert found == ""


def test_default_configs_load(deb_package: Path, tmp_path: Path) -> None:
    """The shipped /etc/pazari files pass the daemons' strict loaders."""
    from pazari.downloader.config import Config, require_notifier, require_processor
    from pazari.mistry.config import MistryConfig
    from pazari.rafka.config import RafkaConfig
    from pazari.runtime.config import from_json, load_config
    from pazari.scratchd.config import ScratchdConfig

    subprocess.run(["dpkg-deb", "-x", str(deb_package), str(tmp_path)], check=True)
    etc = tmp_path / "etc/pazari"
    load_config(etc / "rafka.json", RafkaConfig)
    load_config(etc / "scratchd.json", ScratchdConfig)
    # mistry checks that its trees exist: tmpfiles creates them on the target.
    mistry = orjson.loads((etc / "mistry.json").read_bytes())
    assert mistry["projects_path"] == "/var/lib/pazari/mistry/projects"
    for key in ("projects_path", "build_path"):
        mistry[key] = str(tmp_path / mistry[key].lstrip("/"))
        Path(mistry[key]).mkdir(parents=True)
    from_json(mistry, MistryConfig, file="mistry.json")
    downloader = load_config(etc / "downloader.json", Config)
    assert require_processor(downloader) is None
    assert require_notifier(downloader) is None


def test_lintian_reports_no_errors(deb_package: Path) -> None:
    lintian = require_binary("lintian", "apt-get install -y lintian")
    done = subprocess.run([lintian, "--no-tag-display-limit", str(deb_package)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    tags = [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:", "I:")]
    print("lintian:", *sorted({" ".join(t.split()[:3]) for t in tags}), sep="\n  ")
    errors = [line for line in tags if line.startswith("E:")]
    assert errors == []
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_builds_give_the_same_bytes(deb_package: Path, tmp_path: Path) -> None:
    # Another work directory (and build venv) too: the paths of the build do not leak in.
    first = deb_package
    if os.environ.get("PAZARI_TEST_DEB"):  # built from another commit, maybe: build it here
        build(tmp_path / "first")
        first = tmp_path / "first" / deb_package.name
    build(tmp_path / "out", work=tmp_path / "work")
    again = tmp_path / "out" / deb_package.name
    assert again.read_bytes() == first.read_bytes()
