"""The filesystem file storage (spec §3 step 10): ``<rootdir>/<id[0:3]>/<id>``, moved from
the temp file ``<storage_dir>/<id>.tmp`` by rename (copy, then fsync, across devices). The
batched create/write/sync/rename itself is :mod:`pazari.filestore`'s."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile


class FileStorage:
    def __init__(self, storage_dir: str, rootdir: str) -> None:
        self.storage_dir = storage_dir
        self.rootdir = rootdir
        self._made: set[str] = set()

    def check_writable(self) -> None:
        """Raise OSError unless storage_dir accepts a file (spec §3 Startup)."""
        fd, path = tempfile.mkstemp(prefix="write-check-", dir=self.storage_dir)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(path)
        os.makedirs(self.rootdir, exist_ok=True)

    def tmp_path(self, job_id: str) -> str:
        return os.path.join(self.storage_dir, f"{job_id}.tmp")

    def final_path(self, rel: str) -> str:
        return os.path.join(self.rootdir, rel)

    def store(self, tmp: str, rel: str) -> None:
        """Move the finished temp file to ``<rootdir>/<rel>`` (copy across devices)."""
        if not self.rename_into_place(tmp, rel):
            dst = self.final_path(rel)
            shutil.copyfile(tmp, dst)
            # Durable before the job is reported, as on the rename path (another filesystem:
            # the batch's syncfs of storage_dir does not cover it).
            fd = os.open(dst, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(tmp)

    def commit_target(self, rel: str) -> tuple[str, str]:
        """(final path, its directory if it may not exist yet, else "") for a commit that
        makes the directory and renames (pazari.filestore); :meth:`made` records success."""
        dst = self.final_path(rel)
        parent = os.path.dirname(dst)
        return dst, "" if parent in self._made else parent

    def made(self, parent: str) -> None:
        if parent and len(self._made) < 100_000:
            self._made.add(parent)

    def rename_into_place(self, tmp: str, rel: str) -> bool:
        """The rename half of :meth:`store`: a mkdir and a rename, cheap enough for the event
        loop; False when the rename would cross devices (then :meth:`store` copies)."""
        dst = self.final_path(rel)
        parent = os.path.dirname(dst)
        if parent not in self._made:
            # Nearly every job has a new <id[0:3]> prefix: one mkdir, not makedirs' walk.
            try:
                os.mkdir(parent, 0o755)
            except FileExistsError:
                pass
            except FileNotFoundError:
                os.makedirs(parent, mode=0o755, exist_ok=True)
            self._made.add(parent)
        try:
            os.replace(tmp, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            return False
        return True

    def delete(self, rel: str) -> None:
        """Delete a stored file; a missing file is not an error (spec §3 Reaper)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.final_path(rel))

    def discard_tmp(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path(job_id))
