"""Committing downloaded files to disk: ``commit_files`` writes, fsyncs and renames a batch
of files in one worker-thread hop. It comes from the compiled ``pazari.filestore._commit``
(or its pure twin ``_commit_py`` with ``PAZARI_NO_EXTENSIONS=1``)."""

from __future__ import annotations

from .._ext import select

_impl = select("pazari.filestore._commit", "pazari.filestore._commit_py")

commit_files = _impl.commit_files
STAGE_CREATE: int = _impl.STAGE_CREATE
STAGE_WRITE: int = _impl.STAGE_WRITE
STAGE_SYNC: int = _impl.STAGE_SYNC
STAGE_MKDIR: int = _impl.STAGE_MKDIR
STAGE_RENAME: int = _impl.STAGE_RENAME
SYNC_NONE: int = _impl.SYNC_NONE
SYNC_FILE: int = _impl.SYNC_FILE
SYNC_BATCH: int = _impl.SYNC_BATCH
COMPILED: bool = _impl.__name__ == "pazari.filestore._commit"

__all__ = ["COMPILED", "STAGE_CREATE", "STAGE_MKDIR", "STAGE_RENAME", "STAGE_SYNC",
           "STAGE_WRITE", "SYNC_BATCH", "SYNC_FILE", "SYNC_NONE", "commit_files"]
