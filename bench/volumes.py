"""A fresh, loop-mounted ext4 volume for benchmarks that create many files.

Why: creating an inode on ext4 walks past every inode of its block group that was freed in
the last 60-300 s (``recently_deleted`` in ``find_inode_bit``; perf showed it as a third of
all samples). After ``make test`` has created and deleted tens of thousands of files under
/tmp, one file create there costs 0.24-0.48 ms of kernel CPU, against 0.01 ms on a volume
nobody churned: that is the test suite's noise, not the downloader's cost. A production
storage_dir is a dedicated volume, so the throughput gate writes to a fresh one (real ext4,
journal and fsync included). Without root (or loop devices) the caller's directory is used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.mounts import unmount_and_remove


@contextlib.contextmanager
def fresh_ext4(workdir: Path, size: str = "2G") -> Iterator[tuple[Path, str]]:
    """(directory, kind): kind is ``"fresh ext4 volume"`` or, as a fallback, ``"tmp_path"``."""
    fallback = workdir / "storage"
    fallback.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        yield fallback, "tmp_path"
        return
    image, mountpoint = workdir / "ext4.img", workdir / "ext4"
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    # Inode tables and journal written now, not by ext4lazyinit during the measurement.
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,"
                           "lazy_journal_init=0", str(image)], capture_output=True)
    mounted = made.returncode == 0 and subprocess.run(
        ["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True
    ).returncode == 0
    if not mounted:
        image.unlink()
        yield fallback, "tmp_path"
        return
    try:
        yield mountpoint, "fresh ext4 volume"
    finally:
        unmount_and_remove(mountpoint, image)
