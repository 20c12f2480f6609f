"""Commit finished downloads to disk in one worker-thread hop, without the GIL.

Why compiled: the processor makes every file durable before it reports success (spec §3
step 8). Done with ``os.*`` calls in worker threads, each call released and re-took the GIL:
with the event loop busy, every re-take waited for a forced switch. Here a whole batch runs
its syscalls with the GIL released once: create, write, close, mkdir of the ``id[0:3]``
directory and the rename into place (spec §3 steps 6, 8, 10), and the sync.

Two sync modes. ``SYNC_FILE``: fsync each file before its rename (the original's way, one
device flush per file). ``SYNC_BATCH``: group commit, one ``syncfs(2)`` after the whole batch
is in place: every file and name of the batch is durable when it returns, with one journal
commit and one flush for all of them (2-3x the files per second of per-file fsync on ext4,
and far less CPU; it also writes back other dirty data of that filesystem, so it suits a
storage volume of its own). Either way nothing is reported committed before it is durable.

The pure-Python twin, ``_commit_py``, has the same contract (used as the oracle in tests).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EEXIST, EINTR, errno
from libc.stdio cimport rename
from libc.stdlib cimport free, malloc
from posix.fcntl cimport O_CLOEXEC, O_CREAT, O_TRUNC, O_WRONLY
from posix.fcntl cimport open as c_open
from posix.stat cimport mkdir
from posix.unistd cimport close, fsync, write


cdef extern from "<unistd.h>" nogil:
    int syncfs(int fd)  # Linux; declared under _GNU_SOURCE, which Python.h defines

# Stages, as reported per item (0 = committed).
cdef enum:
    _CREATE = 1
    _WRITE = 2
    _SYNC = 3
    _MKDIR = 4
    _RENAME = 5

STAGE_CREATE = _CREATE
STAGE_WRITE = _WRITE
STAGE_SYNC = _SYNC
STAGE_MKDIR = _MKDIR
STAGE_RENAME = _RENAME

cdef enum:
    _SYNC_NONE = 0
    _SYNC_FILE = 1
    _SYNC_BATCH = 2

SYNC_NONE = _SYNC_NONE
SYNC_FILE = _SYNC_FILE
SYNC_BATCH = _SYNC_BATCH


cdef struct Item:
    const char* tmp
    const char* data  # NULL: the file is already written, ``fd`` is open
    Py_ssize_t size
    int fd
    const char* final  # NULL: leave the temp file where it is
    const char* parent  # NULL: no directory to make
    int stage
    int err


cdef void _commit_one(Item* it, bint sync) noexcept nogil:
    cdef int fd = it.fd
    cdef Py_ssize_t off = 0
    cdef Py_ssize_t n
    if it.data != NULL:
        fd = c_open(it.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0:
            it.stage = _CREATE
            it.err = errno
            return
        while off < it.size:
            n = write(fd, it.data + off, <size_t>(it.size - off))
            if n < 0:
                if errno == EINTR:
                    continue
                it.stage = _WRITE
                it.err = errno
                close(fd)
                return
            off += n
    if sync and fsync(fd) != 0:
        it.stage = _SYNC
        it.err = errno
        close(fd)
        return
    # After a successful fsync a close error has nothing left to lose (Linux closes the
    # descriptor whatever close returns): not retried, not reported.
    close(fd)
    if it.final == NULL:
        return
    if it.parent != NULL and mkdir(it.parent, 0o755) != 0 and errno != EEXIST:
        it.stage = _MKDIR
        it.err = errno
        return
    if rename(it.tmp, it.final) != 0:
        it.stage = _RENAME
        it.err = errno


def commit_files(list items, int sync=SYNC_FILE, int fs_fd=-1):
    """Commit each ``(tmp, data, fd, final, parent)``; return ``[(stage, errno), ...]``.

    ``data`` bytes: create ``tmp`` and write them (``fd`` is ignored); ``data`` None: ``fd``
    is the open, written temp file. Then fsync (``SYNC_FILE``) and close; then, unless
    ``final`` is empty, make ``parent`` (one level, 0o755; skipped when empty) and rename
    ``tmp`` to ``final``. ``SYNC_BATCH`` syncs the filesystem of ``fs_fd`` once after all
    items (a failure there fails every item still standing, with STAGE_SYNC).
    ``(0, 0)`` is success; otherwise the failed stage (STAGE_*) and its errno. The
    descriptor is closed in every case; a failed item's temp file stays for the caller to
    remove. Paths are bytes (``os.fsencode``). Call it from a worker thread."""
    cdef Py_ssize_t count = len(items)
    cdef Py_ssize_t i
    cdef Item* arr
    cdef object tmp, data, final, parent
    cdef int sync_err = 0
    if sync not in (_SYNC_NONE, _SYNC_FILE, _SYNC_BATCH):
        raise ValueError(f"unknown sync mode {sync}")
    if sync == _SYNC_BATCH and fs_fd < 0:
        raise ValueError("SYNC_BATCH needs the filesystem's descriptor")
    if count == 0:
        return []
    arr = <Item*>malloc(count * sizeof(Item))
    if arr == NULL:
        raise MemoryError()
    try:
        # ``items`` holds every bytes object referenced below, so the pointers stay valid
        # while the GIL is released (bytes are immutable).
        for i in range(count):
            tmp, data, fd, final, parent = items[i]
            if not isinstance(tmp, bytes) or not isinstance(final, bytes) or not isinstance(
                    parent, bytes):
                raise TypeError("tmp, final and parent must be bytes")
            arr[i].tmp = PyBytes_AS_STRING(tmp)
            if data is None:
                if fd < 0:
                    raise ValueError("an item without data needs an open descriptor")
                arr[i].data = NULL
                arr[i].size = 0
            elif isinstance(data, bytes):
                arr[i].data = PyBytes_AS_STRING(data)
                arr[i].size = PyBytes_GET_SIZE(data)
            else:
                raise TypeError("data must be bytes or None")
            arr[i].fd = fd
            arr[i].final = PyBytes_AS_STRING(final) if PyBytes_GET_SIZE(final) else NULL
            arr[i].parent = PyBytes_AS_STRING(parent) if PyBytes_GET_SIZE(parent) else NULL
            arr[i].stage = 0
            arr[i].err = 0
        with nogil:
            for i in range(count):
                _commit_one(&arr[i], sync == _SYNC_FILE)
            if sync == _SYNC_BATCH and syncfs(fs_fd) != 0:
                sync_err = errno
        if sync_err:
            for i in range(count):
                if arr[i].stage == 0:
                    arr[i].stage = _SYNC
                    arr[i].err = sync_err
        return [(arr[i].stage, arr[i].err) for i in range(count)]
    finally:
        free(arr)
