"""Stress of the code that runs without the GIL (ext/filestore, issue 19): many threads
commit batches into the same directories at once, racing on the prefix mkdirs; every file
must land whole, every result must be success.

``python tests/race/filestore_stress.py MODULE.so ROOT`` loads the given build of
``pazari.filestore._commit`` (a debug or sanitizer build made by the test) and runs the
stress; it prints ``ok <files>`` or raises.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

THREADS = 8
BATCHES = 40
PER_BATCH = 16
PREFIXES = 4  # few prefix dirs: the threads race on creating them


def load(path: str) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader("pazari.filestore._commit", path)
    spec = importlib.util.spec_from_file_location("pazari.filestore._commit", path,
                                                  loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def stress(commit: ModuleType, root: Path) -> int:
    """Run the stress with ``commit`` (a module with commit_files); the file count."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        try:
            start.wait()
            for n in range(BATCHES):
                items = []
                for i in range(PER_BATCH):
                    name = f"t{t}-b{n}-i{i}"
                    parent = root / f"p{(t + n + i) % PREFIXES}"
                    body = (name.encode() * (1 + (i * 37) % 300))
                    items.append((os.fsencode(root / f"{name}.tmp"), body, -1,
                                  os.fsencode(parent / name), os.fsencode(parent)))
                sync = commit.SYNC_FILE if n % 8 == 0 else commit.SYNC_NONE
                results = commit.commit_files(items, sync)
                assert results == [(0, 0)] * PER_BATCH, results
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,), name=f"stress-{t}")
               for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    count = 0
    for t in range(THREADS):
        for n in range(BATCHES):
            for i in range(PER_BATCH):
                name = f"t{t}-b{n}-i{i}"
                path = root / f"p{(t + n + i) % PREFIXES}" / name
                assert path.read_bytes() == name.encode() * (1 + (i * 37) % 300), path
                count += 1
    assert not list(root.glob("*.tmp"))
    return count


if __name__ == "__main__":
    print("ok", stress(load(sys.argv[1]), Path(sys.argv[2])))
