# Contracts of the cdef internals of pazari.resp._parser (the RESP hot path).
# The behaviour is specified by the pure twin src/pazari/resp/_parser_py.py (the oracle);
# see its module docstring for the grammar and the deviations from go-redisproto.

# Results of _Reader._header (a status, the value goes through a pointer).
cdef enum:
    HDR_OK = 1
    HDR_NEED = 0            # the line is incomplete and still valid so far
    # Negative: a protocol error; the code indexes _ERROR_TEXTS via _error_text().
    ERR_EXPECT_NUMBER = -1
    ERR_EXPECT_NEWLINE = -2
    ERR_EXPECT_TYPECHAR = -3
    ERR_TOO_MANY_ARG = -4
    ERR_INVALID_BULK_SIZE = -5
    ERR_LINE_TOO_LONG = -6


cdef class Reader:
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
    # A multibulk whose arguments are still arriving: a list made by PyList_New(_pending_n)
    # whose slots [0, _pending_i) are filled and the rest are NULL. It never escapes before
    # it is full (list dealloc and GC traversal tolerate NULL slots).
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

    # Parse the '*' or '$' header line whose sigil is at offset p (p < _end). On HDR_OK,
    # *value is the number (in [-1, limit]) and *after the offset past its CRLF. Errors are
    # reported at the first byte that makes the line invalid; `range_error` is the code for
    # a number outside [-1, limit]. Never reads at or beyond _end. No Python objects.
    cdef int _header(self, Py_ssize_t p, Py_ssize_t limit, int range_error,
                     Py_ssize_t* value, Py_ssize_t* after) noexcept nogil

    # Parse the next command: a list, None when more bytes are needed, or None with
    # _error set on a protocol error. Raises only MemoryError.
    cdef object _next(self)

    # Inline command at _start (first byte is not '*'): a list ([] for a blank line, which
    # the caller skips), None if incomplete or on error (_error set).
    cdef object _inline(self)


cdef class Writer:
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
