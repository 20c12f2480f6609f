"""The Debian package built once per session, and a Debian rootfs booted by a real systemd in
a podman container (issue 13). Skipped locally when a tool is missing, failed under CI."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pazari import __version__
from pazari.devstack import CONTAINERS_CONF
from tests.support.services import missing_dependency, require_binary

REPO = Path(__file__).parents[2]
#: The rootfs: Debian's packages only; redis-server from Debian, nothing from the network
#: at test time. Changing this list changes the cache key.
MMDEBSTRAP = [
    "mmdebstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,python3,redis-server",
    "bookworm",
]  # fmt: skip
CACHE = Path(os.environ.get("PAZARI_TEST_CACHE", "/var/cache/pazari-test"))


def _need_root() -> None:
    if os.geteuid() != 0:
        missing_dependency("the packaging tests run as root (mmdebstrap, podman --privileged)")


@pytest.fixture(scope="session")
def deb_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``packaging/deb/build-deb`` into a fresh directory: the package under test
    (``PAZARI_TEST_DEB=dist/pazari_….deb`` tests a package built before instead)."""
    _need_root()
    prebuilt = os.environ.get("PAZARI_TEST_DEB")
    if prebuilt:
        return Path(prebuilt).resolve()
    for binary, package in (("dpkg-deb", "dpkg-dev"), ("gcc", "gcc"), ("strip", "binutils")):
        require_binary(binary, f"apt-get install -y {package}")
    if not Path("/usr/bin/python3").exists():
        missing_dependency("Debian's /usr/bin/python3 is missing: apt-get install -y python3-dev")
    out = tmp_path_factory.mktemp("deb")
    build(out)
    (deb,) = out.glob("pazari_*_amd64.deb")
    assert deb.name == f"pazari_{__version__}_amd64.deb"
    return deb


def build(out: Path, work: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if work is not None:
        env["PAZARI_DEB_WORK"] = str(work)
    done = subprocess.run([str(REPO / "packaging/deb/build-deb"), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, f"build-deb failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def rootfs_tar() -> Path:
    """The mmdebstrap rootfs, cached under $PAZARI_TEST_CACHE by the hash of its command."""
    require_binary("mmdebstrap", "apt-get install -y mmdebstrap")
    key = hashlib.sha256("\0".join(MMDEBSTRAP).encode()).hexdigest()[:16]
    tar = CACHE / f"rootfs-{key}.tar"
    if tar.exists():
        return tar
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tar.with_name(f"{tar.stem}.{os.getpid()}.partial.tar")  # mmdebstrap: format by suffix
    done = subprocess.run([*MMDEBSTRAP, str(partial)], capture_output=True, text=True,
                          timeout=1200)  # fmt: skip
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-5000:]}")
    partial.rename(tar)  # atomic: a concurrent or interrupted run never sees half a tarball
    return tar


class Container:
    """A podman container booted with /sbin/init, with its own podman storage."""

    def __init__(self, workdir: Path, image: str) -> None:
        self.workdir = workdir
        self.image = image
        self.name = f"pazari-systemd-{os.getpid()}"
        (workdir / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(workdir / "containers.conf")}
        runc = require_binary("runc", "apt-get install -y runc", extra_paths=["/usr/sbin/runc"])
        self.podman_argv = [
            require_binary("podman", "apt-get install -y podman"),
            "--root", str(workdir / "storage"), "--runroot", str(workdir / "run"),
            "--tmpdir", str(workdir / "tmp"), "--storage-driver", "vfs",
            "--runtime", runc, "--cgroup-manager", "cgroupfs",
        ]  # fmt: skip

    def podman(self, *args: str, timeout: float = 300, check: bool = True
               ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run([*self.podman_argv, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=check)  # fmt: skip

    def sh(self, script: str, timeout: float = 120, check: bool = True
           ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a shell script inside the container."""
        done = self.podman("exec", self.name, "/bin/sh", "-c", script, timeout=timeout,
                           check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the container: {script!r} exited {done.returncode}\n"
                f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
            )
        return done

    def out(self, script: str, timeout: float = 120) -> str:
        return self.sh(script, timeout).stdout.strip()

    def copy_in(self, src: Path, dst: str) -> None:
        self.podman("cp", str(src), f"{self.name}:{dst}")

    def boot(self) -> None:
        # --network none: the container has only its loopback; every daemon, client and
        # server of the test talks there. --privileged: systemd's namespacing (ProtectSystem,
        # PrivateTmp, ...) needs it; without it units fail with 226/NAMESPACE.
        self.podman("run", "-d", "--name", self.name, "--network", "none", "--privileged",
                    "--systemd=always", self.image, "/sbin/init")  # fmt: skip
        deadline = time.monotonic() + 120
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)  # polling systemd's state; there is no event to wait on
        assert state == "running", (
            f"systemd in the container is {state!r}:\n"
            + self.sh("systemctl --failed --no-pager", check=False).stdout
        )

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.podman("rm", "--force", "--time", "0", self.name, timeout=120, check=False)


@pytest.fixture(scope="session")
def systemd_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted Debian bookworm with systemd as PID 1, nothing of pazari installed yet."""
    _need_root()
    tar = rootfs_tar()
    workdir = tmp_path_factory.mktemp("systemd-podman")
    image = f"localhost/pazari-systemd:{tar.stem.removeprefix('rootfs-')}"
    container = Container(workdir, image)
    container.podman("import", str(tar), image)
    container.boot()
    try:
        yield container
    finally:
        container.remove()
        shutil.rmtree(workdir / "storage", ignore_errors=True)
