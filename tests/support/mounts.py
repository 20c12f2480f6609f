"""Loop-mounted images for tests and benchmarks (btrfs for mistry, a fresh ext4 volume for the
downloader's throughput gate): the unmount that never leaves a mount behind."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path


def unmount_and_remove(mountpoint: Path, image: Path) -> None:
    """Unmount (retrying after a sync while something still holds it, then lazily) and
    delete the image."""
    for _ in range(5):
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode == 0:
            break
        subprocess.run(["sync"], check=False)
    else:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    with contextlib.suppress(OSError):
        image.unlink()
