# Contracts of the compiled event encoder's internals (the pure reference is
# src/pazari/event/_encoder_py.py; the canonical rules are documented there).
#
# One encoder call owns one _Work: a scratch buffer with the cleaned text of every field and
# param, the distinct params found so far, and the output buffer. Every helper reads at most
# the ``n`` bytes it is given and grows a buffer (``_reserve``) before every write into it.

from libc.stdint cimport uint32_t

cdef struct _Buf:
    unsigned char* data
    Py_ssize_t size
    Py_ssize_t cap

cdef struct _Span:
    Py_ssize_t koff
    Py_ssize_t klen
    Py_ssize_t voff
    Py_ssize_t vlen
    uint32_t khash

# Make room for ``extra`` more bytes; -1 with MemoryError set when out of memory.
cdef int _reserve(_Buf* buf, Py_ssize_t extra) except -1
# Append ``p[0:n]`` to ``out`` as text: ill-formed UTF-8 subparts and control characters
# (U+0000–U+001F, U+007F–U+009F) become U+FFFD. Returns the number of bytes appended.
cdef Py_ssize_t _clean(_Buf* out, const unsigned char* p, Py_ssize_t n) except -1
# WHATWG urlencoded decoding of ``p[0:n]`` into ``tmp`` (reset first): '+' → space,
# %HH → byte, any other '%' stays literal.
cdef int _percent_decode(_Buf* tmp, const unsigned char* p, Py_ssize_t n) except -1
# Append ``p[0:n]`` as a JSON string body: only '"' and '\\' need escaping once cleaned.
cdef int _escape(_Buf* out, const unsigned char* p, Py_ssize_t n) except -1
