# RESP request parser and reply writer: the compiled hot path of rafka (rafka.md §1.1).
#
# Same API and behaviour as the pure twin src/pazari/resp/_parser_py.py, which is the oracle
# and documents the grammar. The contract of each cdef internal is the comment above its
# declaration. (They belong in _parser.pxd, but setup.py's Cython looks the module's own
# .pxd up as `pazari.resp._parser`, which ext/resp/_parser.pxd does not match.)
# boundscheck/wraparound are off in release builds (setup.py): every index below is
# checked against _end/_len explicitly before it is read.

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcpy, memmove

import operator

from pazari.resp.errors import (
    EXPECT_NEWLINE,
    EXPECT_NUMBER,
    EXPECT_TYPECHAR,
    INVALID_BULK_SIZE,
    LINE_TOO_LONG,
    TOO_MANY_ARG,
    ProtocolError,
)

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    void PyObject_GC_UnTrack(void* op)

__all__ = ["ProtocolError", "Reader", "Writer", "encode_command"]

# Results of _scan_header (a status; the number goes out through a pointer).
cdef enum:
    HDR_OK = 1
    HDR_NEED = 0            # the line is incomplete and still valid so far
    # Negative: a protocol error; _error_text() maps it to the go-redisproto text.
    ERR_EXPECT_NUMBER = -1
    ERR_EXPECT_NEWLINE = -2
    ERR_EXPECT_TYPECHAR = -3
    ERR_TOO_MANY_ARG = -4
    ERR_INVALID_BULK_SIZE = -5
    ERR_LINE_TOO_LONG = -6

# Same limits as the pure twin; they also keep val * 10 + 9 inside a C int64 in _scan_header.
cdef Py_ssize_t _MAX_BULK_LIMIT = 1 << 50
cdef Py_ssize_t _MAX_SMALL_LIMIT = (1 << 31) - 1
cdef Py_ssize_t _MAX_ARGS_LIMIT = 1 << 20

cdef enum:
    # 64 KiB holds a typical socket read; buffers that grew past 4 MiB (a big bulk) are
    # given back once drained so one large message does not pin memory for the connection.
    _INITIAL_CAP = 65536
    _SHRINK_ABOVE = 4 * 1024 * 1024
    _STAR = 42      # '*'
    _DOLLAR = 36    # '$'
    _MINUS = 45     # '-'
    _CR = 13
    _LF = 10
    _SPACE = 32


cdef inline str _error_text(int code):
    if code == ERR_EXPECT_NUMBER:
        return EXPECT_NUMBER
    if code == ERR_EXPECT_NEWLINE:
        return EXPECT_NEWLINE
    if code == ERR_EXPECT_TYPECHAR:
        return EXPECT_TYPECHAR
    if code == ERR_TOO_MANY_ARG:
        return TOO_MANY_ARG
    if code == ERR_INVALID_BULK_SIZE:
        return INVALID_BULK_SIZE
    return LINE_TOO_LONG


cdef Py_ssize_t _check_limit(str name, object value, Py_ssize_t top) except -1:
    value = operator.index(value)
    if not 0 <= value <= top:
        raise ValueError(f"{name} must be in [0, {top}], got {value}")
    return value


# Parse the '*' or '$' header line whose sigil is at buf[p] (p < end). On HDR_OK, *value is
# the number (in [-1, limit]; only -1 and -0 are accepted below zero) and *after the offset
# past its CRLF. Every byte is checked as it comes, so the result depends only on the bytes:
# a non-digit -> ERR_EXPECT_NUMBER, a number leaving [-1, limit] -> range_error at that
# digit, CR not followed by LF -> ERR_EXPECT_NEWLINE, more than max_inline bytes before CR ->
# ERR_LINE_TOO_LONG, else HDR_NEED when the line is incomplete. Never reads at or beyond
# end; no Python objects. limit must be <= 2**50 so val * 10 + 9 cannot overflow.
cdef int _scan_header(const char* buf, Py_ssize_t p, Py_ssize_t end,
                      Py_ssize_t max_inline, Py_ssize_t limit, int range_error,
                      Py_ssize_t* value, Py_ssize_t* after) noexcept nogil:
    # Byte by byte, like go-redisproto's readNumber, so
    # the error point depends only on the bytes (split invariance).
    cdef Py_ssize_t q = p + 1
    cdef Py_ssize_t maxq = p + max_inline   # q - p > max_inline  <=>  q > maxq
    cdef Py_ssize_t stop = end if end <= maxq else maxq + 1
    cdef Py_ssize_t val = 0
    cdef Py_ssize_t lim = limit
    cdef bint neg = 0
    cdef unsigned char c
    while True:
        if q >= stop:
            # Bounded buffering: a header longer than max_inline is garbage.
            return ERR_LINE_TOO_LONG if q > maxq else HDR_NEED
        c = <unsigned char>buf[q]
        if <unsigned char>(c - 48) <= 9:
            val = val * 10 + (c - 48)
            if val > lim:
                return range_error
            q += 1
        elif c == _CR:
            break
        elif c == _MINUS and q == p + 1:
            neg = 1
            lim = 1   # only -1 (null) and -0 are valid negatives
            q += 1
        else:
            return ERR_EXPECT_NUMBER
    if q == p + 1 + neg:
        return ERR_EXPECT_NUMBER   # no digits at all
    if q + 1 >= end:
        return HDR_NEED
    if buf[q + 1] != _LF:
        return ERR_EXPECT_NEWLINE
    value[0] = -val if neg else val
    after[0] = q + 2
    return HDR_OK


cdef class Reader:
    """Incremental RESP request parser: ``feed`` bytes, then take whole commands out."""

    # Buffer: bytes [_start, _end) of the malloc'd _buf (capacity _cap) are unconsumed.
    # Invariant: 0 <= _start <= _end <= _cap; _buf is never NULL after __cinit__.
    cdef char* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef Py_ssize_t _max_bulk
    cdef Py_ssize_t _max_inline
    cdef Py_ssize_t _max_args
    # Bytes after _start already known to contain no b"\n" (inline line still arriving),
    # so feeding a long inline line byte by byte stays linear.
    cdef Py_ssize_t _inline_scanned
    # A multibulk whose arguments are still arriving: slots [0, _pending_i) hold them, the
    # rest hold None (never NULL: the GC can hand this list to Python code, which must not
    # meet a NULL item). It is returned only once full.
    cdef list _pending
    cdef Py_ssize_t _pending_n
    cdef Py_ssize_t _pending_i
    # Sticky protocol error code (0 = none): after it, feed() ignores data and every
    # gets()/gets_all() raises ProtocolError with the same text.
    cdef int _error
    # Set while a gets()/gets_all() runs: feed() refuses to move _buf under the parser
    # (a finalizer triggered by an allocation could otherwise call feed re-entrantly).
    cdef bint _busy

    # Append n bytes, compacting the consumed prefix first when that is cheaper than
    # growing (amortised O(1) per byte). Raises MemoryError.
    cdef int _append(self, const char* data, Py_ssize_t n) except -1

    # Parse the next command: a list, None when more bytes are needed, or None with
    # _error set on a protocol error. Raises only MemoryError.
    cdef object _next(self)

    # Keep the partial multibulk cmd (first i arguments filled) for the next call, its
    # unfilled slots set to None.
    cdef int _park(self, list cmd, Py_ssize_t i) except -1

    # Inline command at _start (first byte is not '*'): a list ([] for a blank line, which
    # the caller skips), None if incomplete or on error (_error set).
    cdef object _inline(self)

    def __cinit__(self):
        self._buf = <char*>malloc(_INITIAL_CAP)
        if self._buf == NULL:
            raise MemoryError()
        self._cap = _INITIAL_CAP

    def __dealloc__(self):
        free(self._buf)
        self._buf = NULL

    def __init__(self, *, max_bulk=32_768_000, max_inline=65536, max_args=20):
        self._max_bulk = _check_limit("max_bulk", max_bulk, _MAX_BULK_LIMIT)
        self._max_inline = _check_limit("max_inline", max_inline, _MAX_SMALL_LIMIT)
        self._max_args = _check_limit("max_args", max_args, _MAX_ARGS_LIMIT)

    cdef int _append(self, const char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self._end - self._start
        cdef Py_ssize_t need, newcap
        cdef char* nb
        if live == 0:
            self._start = 0
            self._end = 0
            if self._cap > _SHRINK_ABOVE and n <= _INITIAL_CAP:
                nb = <char*>realloc(self._buf, _INITIAL_CAP)
                if nb == NULL:
                    raise MemoryError()
                self._buf = nb
                self._cap = _INITIAL_CAP
        if self._end + n > self._cap:
            need = live + n
            if need <= self._cap and self._start >= live:
                # Moving costs at most the bytes consumed since: amortised O(1) per byte.
                memmove(self._buf, self._buf + self._start, live)
            else:
                newcap = self._cap * 2
                if newcap < need:
                    newcap = need
                nb = <char*>malloc(newcap)
                if nb == NULL:
                    raise MemoryError()
                memcpy(nb, self._buf + self._start, live)
                free(self._buf)
                self._buf = nb
                self._cap = newcap
            self._start = 0
            self._end = live
        memcpy(self._buf + self._end, data, n)
        self._end += n
        return 0

    def feed(self, data):
        """Append ``data`` to the buffer (ignored once a ProtocolError was raised)."""
        cdef Py_buffer view
        if self._error:
            return
        if self._busy:
            raise RuntimeError("Reader.feed called while the Reader is parsing")
        if type(data) is bytes:
            self._append(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._append(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def buffered(self):
        """Bytes buffered and not yet consumed into a returned or pending command."""
        return self._end - self._start

    def gets(self):
        """Return one complete command, or None when more bytes are needed."""
        if self._error:
            raise ProtocolError(_error_text(self._error))
        self._busy = 1
        try:
            cmd = self._next()
        finally:
            self._busy = 0
        if cmd is not None:
            # A command holds only bytes and None: it cannot be part of a reference cycle,
            # so the cyclic GC need not scan it. Untracked, a pipelined batch of thousands
            # of commands no longer drags the collector through every one of them and
            # promotes none to older generations (a profile showed 15% of rafka's produce
            # path in gc_collect_main before this).
            PyObject_GC_UnTrack(<void*>cmd)
        if cmd is None and self._error:
            raise ProtocolError(_error_text(self._error))
        return cmd

    def gets_all(self):
        """Return every complete command buffered now; ``[]`` when there is none.

        If a malformed frame follows complete commands, those commands are returned and the
        ProtocolError is raised by the next ``gets``/``gets_all`` call, which needs no new
        bytes: a server loops ``while cmds := reader.gets_all()`` to reply to them first.
        """
        cdef list out = []
        if self._error:
            raise ProtocolError(_error_text(self._error))
        self._busy = 1
        try:
            while True:
                cmd = self._next()
                if cmd is None:
                    break
                PyObject_GC_UnTrack(<void*>cmd)  # bytes and None only: see gets()
                out.append(cmd)
        finally:
            self._busy = 0
        if not out and self._error:
            raise ProtocolError(_error_text(self._error))
        return out

    cdef object _next(self):
        cdef const char* buf = self._buf
        cdef Py_ssize_t end = self._end
        cdef Py_ssize_t p, n, i, size, start, stop
        cdef int rc
        cdef list cmd = self._pending
        cdef object item
        if cmd is None:
            while True:
                p = self._start
                if p >= end:
                    return None
                if buf[p] != _STAR:
                    item = self._inline()
                    if item is None:
                        return None
                    if PyList_GET_SIZE(item):
                        return item
                    continue   # an empty inline line yields nothing
                rc = _scan_header(buf, p, end, self._max_inline, self._max_args,
                                  ERR_TOO_MANY_ARG, &n, &start)
                if rc != HDR_OK:
                    if rc != HDR_NEED:
                        self._error = rc
                    return None
                self._start = start
                if n <= 0:
                    return []   # *0 and *-1: an empty command, the server picks the reply
                # NULL slots until filled; this list stays local unless stored by _park().
                cmd = PyList_New(n)
                self._pending_n = n
                self._pending_i = 0
                break
        i = self._pending_i
        n = self._pending_n
        p = self._start
        while i < n:
            if p >= end:
                break
            if buf[p] != _DOLLAR:
                self._error = ERR_EXPECT_TYPECHAR
                break
            rc = _scan_header(buf, p, end, self._max_inline, self._max_bulk,
                              ERR_INVALID_BULK_SIZE, &size, &start)
            if rc != HDR_OK:
                if rc != HDR_NEED:
                    self._error = rc
                break
            if size < 0:
                item = None   # $-1: a null argument arrives as nil
                p = start
            else:
                stop = start + size
                # The payload must be followed by CRLF; check each byte once it is here.
                if stop < end and buf[stop] != _CR:
                    self._error = ERR_EXPECT_NEWLINE
                    break
                if stop + 1 >= end:
                    break
                if buf[stop + 1] != _LF:
                    self._error = ERR_EXPECT_NEWLINE
                    break
                item = PyBytes_FromStringAndSize(buf + start, size)
                p = stop + 2
            Py_XDECREF(PyList_GET_ITEM(cmd, i))   # the None of a parked list, or NULL
            Py_INCREF(item)   # PyList_SET_ITEM steals a reference
            PyList_SET_ITEM(cmd, i, item)
            i += 1
        self._start = p
        if i < n:
            self._park(cmd, i)
            return None
        self._pending = None
        return cmd

    cdef int _park(self, list cmd, Py_ssize_t i) except -1:
        cdef Py_ssize_t j
        for j in range(i, self._pending_n):
            if PyList_GET_ITEM(cmd, j) == NULL:
                Py_INCREF(None)
                PyList_SET_ITEM(cmd, j, None)
        self._pending = cmd
        self._pending_i = i
        return 0

    cdef object _inline(self):
        cdef const char* buf = self._buf
        cdef Py_ssize_t p = self._start
        cdef Py_ssize_t end = self._end
        cdef Py_ssize_t nl, stop, q, count, i, field_end
        cdef const char* hit
        cdef list cmd
        cdef object item
        hit = <const char*>memchr(buf + p + self._inline_scanned, _LF,
                                  end - p - self._inline_scanned)
        if hit == NULL:
            if end - p > self._max_inline:
                self._error = ERR_LINE_TOO_LONG
                return None
            self._inline_scanned = end - p
            return None
        nl = hit - buf
        if nl - p > self._max_inline:
            self._error = ERR_LINE_TOO_LONG
            return None
        self._inline_scanned = 0
        stop = nl - 1 if nl > p and buf[nl - 1] == _CR else nl
        # Split on single spaces, dropping empty fields (redis-cli-like; see the pure twin).
        count = 0
        q = p
        while q < stop:
            if buf[q] == _SPACE:
                q += 1
                continue
            count += 1
            hit = <const char*>memchr(buf + q, _SPACE, stop - q)
            q = stop if hit == NULL else hit - buf
        if count > self._max_args:
            self._error = ERR_TOO_MANY_ARG
            return None
        cmd = PyList_New(count)
        i = 0
        q = p
        while q < stop:
            if buf[q] == _SPACE:
                q += 1
                continue
            hit = <const char*>memchr(buf + q, _SPACE, stop - q)
            field_end = stop if hit == NULL else hit - buf
            item = PyBytes_FromStringAndSize(buf + q, field_end - q)
            Py_INCREF(item)
            PyList_SET_ITEM(cmd, i, item)
            i += 1
            q = field_end
        self._start = nl + 1
        return cmd


# -- writer ------------------------------------------------------------------------------

cdef inline Py_ssize_t _fmt_ll(char* out, long long v) noexcept nogil:
    # Decimal of v into out (needs 20 bytes); returns the length. Handles LLONG_MIN.
    cdef char tmp[24]
    cdef unsigned long long u
    cdef Py_ssize_t n = 0
    cdef Py_ssize_t k = 0
    if v < 0:
        u = <unsigned long long>(-(v + 1)) + 1
        out[0] = b'-'
        k = 1
    else:
        u = <unsigned long long>v
    while True:
        tmp[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    while n:
        n -= 1
        out[k] = tmp[n]
        k += 1
    return k


cdef class Writer:
    """RESP2/RESP3 reply encoder into one growing buffer, taken as one bytes per batch."""

    # Bytes [0, _len) of the malloc'd _buf (capacity _cap) are pending replies.
    cdef char* _buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef public bint resp3

    # Make room for n more bytes and return the write pointer (valid until the next
    # _reserve). Raises MemoryError.
    cdef char* _reserve(self, Py_ssize_t n) except NULL
    cdef int _raw(self, const char* data, Py_ssize_t n) except -1
    # prefix + decimal(n) + CRLF for any Python int (int64 fast path, str() beyond).
    cdef int _int(self, char prefix, object n) except -1
    cdef int _bulk(self, object b) except -1
    # prefix + s + CRLF with CR/LF in s turned into spaces.
    cdef int _line(self, char prefix, object s) except -1

    def __cinit__(self):
        self._buf = <char*>malloc(_INITIAL_CAP)
        if self._buf == NULL:
            raise MemoryError()
        self._cap = _INITIAL_CAP

    def __dealloc__(self):
        free(self._buf)
        self._buf = NULL

    def __init__(self, resp3=False):
        self.resp3 = resp3

    def __len__(self):
        return self._len

    cdef char* _reserve(self, Py_ssize_t n) except NULL:
        cdef Py_ssize_t newcap
        cdef char* nb
        if self._len + n > self._cap:
            newcap = self._cap * 2
            if newcap < self._len + n:
                newcap = self._len + n
            nb = <char*>realloc(self._buf, newcap)
            if nb == NULL:
                raise MemoryError()
            self._buf = nb
            self._cap = newcap
        return self._buf + self._len

    cdef int _raw(self, const char* data, Py_ssize_t n) except -1:
        cdef char* w = self._reserve(n)
        memcpy(w, data, n)
        self._len += n
        return 0

    cdef int _int(self, char prefix, object n) except -1:
        cdef int overflow = 0
        cdef long long v = PyLong_AsLongLongAndOverflow(n, &overflow)
        cdef char* w
        cdef Py_ssize_t k
        cdef bytes s
        if overflow:
            # Beyond int64 (not valid RESP, but encode what was asked, as the pure twin).
            s = b"%d" % operator.index(n)
            w = self._reserve(PyBytes_GET_SIZE(s) + 3)
            w[0] = prefix
            memcpy(w + 1, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))
            k = 1 + PyBytes_GET_SIZE(s)
        else:
            w = self._reserve(24)
            w[0] = prefix
            k = 1 + _fmt_ll(w + 1, v)
        w[k] = b'\r'
        w[k + 1] = b'\n'
        self._len += k + 2
        return 0

    cdef int _bulk(self, object b) except -1:
        cdef Py_ssize_t n, k
        cdef char* w
        if b is None:
            if self.resp3:
                return self._raw(b"_\r\n", 3)
            return self._raw(b"$-1\r\n", 5)
        if type(b) is not bytes:
            b = bytes(b)
        n = PyBytes_GET_SIZE(b)
        w = self._reserve(n + 26)
        w[0] = b'$'
        k = 1 + _fmt_ll(w + 1, n)
        w[k] = b'\r'
        w[k + 1] = b'\n'
        memcpy(w + k + 2, PyBytes_AS_STRING(b), n)
        k += n + 2
        w[k] = b'\r'
        w[k + 1] = b'\n'
        self._len += k + 2
        return 0

    cdef int _line(self, char prefix, object s) except -1:
        # A CR or LF inside a simple string or error would end the reply early and let the
        # rest be read as another reply; redis' addReplyErrorFormat turns them into spaces.
        cdef Py_ssize_t n, i
        cdef char* w
        if type(s) is not bytes:
            s = bytes(s)
        n = PyBytes_GET_SIZE(s)
        w = self._reserve(n + 3)
        w[0] = prefix
        memcpy(w + 1, PyBytes_AS_STRING(s), n)
        for i in range(1, n + 1):
            if w[i] == _CR or w[i] == _LF:
                w[i] = b' '
        w[n + 1] = b'\r'
        w[n + 2] = b'\n'
        self._len += n + 3
        return 0

    def take(self):
        """Return everything written since the last take and start over."""
        cdef bytes out = PyBytes_FromStringAndSize(self._buf, self._len)
        cdef char* nb
        self._len = 0
        if self._cap > _SHRINK_ABOVE:
            nb = <char*>realloc(self._buf, _INITIAL_CAP)
            if nb != NULL:
                self._buf = nb
                self._cap = _INITIAL_CAP
        return out

    def simple(self, s):
        self._line(b'+', s)

    def error(self, s):
        self._line(b'-', s)

    def integer(self, n):
        self._int(b':', n)

    def array(self, n):
        self._int(b'*', n)

    def map(self, n):
        # RESP3 map; a RESP2 client gets the flat key/value array (what redis does).
        if self.resp3:
            self._int(b'%', n)
        else:
            self._int(b'*', operator.index(n) * 2)

    def null_array(self):
        if self.resp3:
            self._raw(b"_\r\n", 3)
        else:
            self._raw(b"*-1\r\n", 5)

    def bulk(self, b):
        self._bulk(b)

    def bulk_array(self, items):
        self._int(b'*', len(items))
        for item in items:
            self._bulk(item)

    def message(self, topic, partition, offset, value):
        """The rafka BLPOP reply (rafka.md §1.3): topic, partition, offset, value."""
        self._raw(b"*8\r\n$5\r\ntopic\r\n", 15)
        self._bulk(topic)
        self._raw(b"$9\r\npartition\r\n", 15)
        self._int(b':', partition)
        self._raw(b"$6\r\noffset\r\n", 12)
        self._int(b':', offset)
        self._raw(b"$5\r\nvalue\r\n", 11)
        self._bulk(value)


def encode_command(*args):
    """Encode a request as a RESP multibulk (what clients send; used by tests)."""
    cdef Writer w = Writer()
    cdef object b
    w._int(b'*', len(args))
    for arg in args:
        if isinstance(arg, str):
            b = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("encode_command does not take bool arguments")
        elif isinstance(arg, int):
            b = b"%d" % arg
        else:
            b = bytes(arg)
        w._bulk(b)
    return w.take()
