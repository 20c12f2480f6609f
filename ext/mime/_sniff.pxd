# NOTE: setup.py compiles this module as pazari.mime._sniff without a Cython include path,
# so today Cython reads these declarations only when the module is cythonized on its own
# (`cython ext/mime/_sniff.pyx`); they must stay in step with the definitions in _sniff.pyx.

# Contracts of the compiled sniffer's internals. Every helper takes a pointer and the number of
# bytes behind it, and never reads at or past ``n``: the callers checked the length once, and
# (boundscheck off in release) each helper re-checks before every read beyond what it was given.

# 0 = binary, 1 = single-byte text, 2 = UTF-16/32 text (libmagic encoding.c).
cdef int _looks_text(const unsigned char* p, Py_ssize_t n) noexcept nogil
# libmagic is_tar.c: a 512-byte header with a matching checksum.
cdef bint _is_tar(const unsigned char* p, Py_ssize_t n) noexcept nogil
# 0 = not JSON, 1 = JSON, 2 = NDJSON (libmagic is_json.c).
cdef int _json_kind(const unsigned char* p, Py_ssize_t n) noexcept nogil
# libmagic is_csv.c.
cdef bint _is_csv(const unsigned char* p, Py_ssize_t n) noexcept nogil
# Binary magic; returns a str constant or None.
cdef object _sniff_binary(const unsigned char* p, Py_ssize_t n)
# Text tests on text without its UTF-8 BOM; returns a str constant or None.
cdef object _sniff_text(const unsigned char* p, Py_ssize_t n)
