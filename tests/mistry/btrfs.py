"""A loop-mounted btrfs image for the btrfs adapter tests and the clone benchmark.

Needs root, the loop driver and btrfs-progs; without them the caller skips (or fails in
CI with the apt-get hint). The image is always unmounted and deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.mounts import unmount_and_remove
from tests.support.services import missing_dependency


@contextlib.contextmanager
def loop_btrfs(workdir: Path, size: str = "1G") -> Iterator[Path]:
    for tool in ("mkfs.btrfs", "btrfs"):
        if shutil.which(tool) is None:
            missing_dependency(f"{tool} not found; install it with: apt-get install -y btrfs-progs")
    if os.geteuid() != 0:
        missing_dependency("mounting a loop btrfs image needs root")
    image = workdir / "btrfs.img"
    mountpoint = workdir / "btrfs"
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        image.unlink()
        missing_dependency(f"cannot loop-mount a btrfs image here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        unmount_and_remove(mountpoint, image)
