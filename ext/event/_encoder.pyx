"""Compiled event encoder: raw query bytes (or a parsed JSON object) plus the header values
to the canonical event bytes in one pass, with no intermediate dict (spec "Encoding").

Byte-identical to ``pazari.event._encoder_py`` (a dict + ``orjson.dumps``); the canonical
rules (WHATWG application/x-www-form-urlencoded parsing, RFC 3986 percent-escapes, U+FFFD for
ill-formed UTF-8 and control characters, last duplicate wins) are documented there.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

import orjson

from pazari.event.errors import EventError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)

from time import time_ns as _time_ns


# Limits (spec "The event"), reserved-key slots and header-field slots.
cdef enum:
    MAX_KEY = 128
    MAX_VALUE = 4096
    MAX_PARAMS = 256
    MAX_EVENT = 32768
    R_TYPE = 0
    R_SENT_AT = 1
    R_SESSION = 2
    R_URL = 3
    R_REFERRER = 4
    N_RESERVED = 5
    H_ID = 0
    H_TENANT = 1
    H_TYPE = 2
    H_VISITOR = 3
    H_URL = 4
    H_IP = 5
    H_UA = 6
    N_HEAD = 7


_HEAD_NAMES = ("id", "tenant", "type", "visitor_id", "url", "ip", "user_agent")
_orjson_dumps = orjson.dumps
_JSONEncodeError = orjson.JSONEncodeError


cdef int _reserve(_Buf* buf, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = buf.size + extra
    cdef Py_ssize_t cap
    cdef unsigned char* grown
    if need <= buf.cap:
        return 0
    cap = buf.cap * 2 if buf.cap else 1024
    while cap < need:
        cap *= 2
    grown = <unsigned char*>realloc(buf.data, cap)
    if grown == NULL:
        raise MemoryError()
    buf.data = grown
    buf.cap = cap
    return 0


cdef inline void _put_fffd(_Buf* out) noexcept:
    out.data[out.size] = 0xEF
    out.data[out.size + 1] = 0xBF
    out.data[out.size + 2] = 0xBD
    out.size += 3


# Eight bytes at a time (SWAR, "Bit Twiddling Hacks": haszero/hasless). The common text of
# an event (ASCII, nothing to decode or escape) is copied a word at a time: each mask below
# flags the bytes that need the byte loop, and its lowest flag is exact (a borrow only
# carries upward, past the first flagged byte), so the bytes below it are copied as they are.
cdef extern from *:
    """
    #define PAZARI_EVENT_ONES 0x0101010101010101ULL
    #define PAZARI_EVENT_HIGHS 0x8080808080808080ULL
    #define pazari_event_ctz(w) __builtin_ctzll(w)
    """
    const uint64_t _ONES "PAZARI_EVENT_ONES"
    const uint64_t _HIGHS "PAZARI_EVENT_HIGHS"
    int _ctz "pazari_event_ctz"(uint64_t w) noexcept


cdef inline uint64_t _load8(const unsigned char* p) noexcept:
    cdef uint64_t w
    memcpy(&w, p, 8)
    return w


cdef inline uint64_t _zeros(uint64_t w) noexcept:
    """High bit of each zero byte (exact up to the first one)."""
    return (w - _ONES) & ~w & _HIGHS


cdef inline uint64_t _equal(uint64_t w, unsigned char b) noexcept:
    return _zeros(w ^ (_ONES * b))


cdef inline uint64_t _not_plain(uint64_t w) noexcept:
    """Bytes >= 0x80, < 0x20 (hasless) or 0x7F: what _clean looks at one by one."""
    return (w & _HIGHS) | ((w - _ONES * 0x20) & ~w & _HIGHS) | _equal(w, 0x7F)


cdef inline Py_ssize_t _plain_run(uint64_t flags) noexcept:
    """How many bytes of the word come before its first flagged byte (8: none flagged)."""
    return 8 if flags == 0 else _ctz(flags) >> 3


cdef Py_ssize_t _clean(_Buf* out, const unsigned char* p, Py_ssize_t n) except -1:
    # Worst case every input byte becomes one U+FFFD (3 bytes).
    _reserve(out, 3 * n)
    # Locals, not out.data[out.size]: the compiler keeps them in registers (the buffer may
    # alias the struct as far as it knows); this loop is most of an event's encoding.
    cdef unsigned char* d = out.data + out.size
    cdef unsigned char* start = d
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t need, k
    cdef unsigned char c, c1, lo, hi
    while i < n:
        if i + 8 <= n:
            # Eight bytes copied, the plain ones before the first other byte kept: the
            # reservation above leaves room for them.
            memcpy(d, p + i, 8)
            k = _plain_run(_not_plain(_load8(p + i)))
            d += k
            i += k
            if k == 8:
                continue
        c = p[i]
        if c < 0x80:
            if c < 0x20 or c == 0x7F:
                d[0] = 0xEF
                d[1] = 0xBF
                d[2] = 0xBD
                d += 3
            else:
                d[0] = c
                d += 1
            i += 1
            continue
        # Unicode §3.9 Table 3-7: the well-formed byte sequences, by lead byte.
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            need = 1
        elif c == 0xE0:
            need = 2
            lo = 0xA0
        elif c == 0xED:
            need = 2
            hi = 0x9F
        elif 0xE1 <= c <= 0xEF:
            need = 2
        elif c == 0xF0:
            need = 3
            lo = 0x90
        elif 0xF1 <= c <= 0xF3:
            need = 3
        elif c == 0xF4:
            need = 3
            hi = 0x8F
        else:
            d[0] = 0xEF
            d[1] = 0xBF
            d[2] = 0xBD
            d += 3
            i += 1
            continue
        # The maximal ill-formed subpart (lead + the valid continuations before the first
        # bad byte, or before the end of input) becomes one U+FFFD; decoding resumes there.
        k = 1
        while k <= need:
            if i + k >= n:
                break
            c1 = p[i + k]
            if k == 1:
                if c1 < lo or c1 > hi:
                    break
            elif c1 < 0x80 or c1 > 0xBF:
                break
            k += 1
        if k <= need or (c == 0xC2 and p[i + 1] <= 0x9F):  # or a C1 control, U+0080–U+009F
            d[0] = 0xEF
            d[1] = 0xBF
            d[2] = 0xBD
            d += 3
            i += k if k <= need else need + 1
            continue
        memcpy(d, p + i, need + 1)
        d += need + 1
        i += need + 1
    out.size += d - start
    return d - start


cdef inline int _hex(unsigned char c) noexcept:
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x41 <= c <= 0x46:
        return c - 0x37
    if 0x61 <= c <= 0x66:
        return c - 0x57
    return -1


cdef int _percent_decode(_Buf* tmp, const unsigned char* p, Py_ssize_t n) except -1:
    tmp.size = 0
    _reserve(tmp, n)
    cdef unsigned char* d = tmp.data
    cdef Py_ssize_t i = 0
    cdef unsigned char c
    cdef int h, l
    cdef Py_ssize_t k
    cdef uint64_t w
    while i < n:
        if i + 8 <= n:
            w = _load8(p + i)
            memcpy(d, p + i, 8)
            k = _plain_run(_equal(w, 0x2B) | _equal(w, 0x25))  # up to a '+' or a '%'
            d += k
            i += k
            if k == 8:
                continue
        c = p[i]
        if c == 0x2B:  # '+'
            c = 0x20
        elif c == 0x25 and i + 2 < n:
            h = _hex(p[i + 1])
            l = _hex(p[i + 2])
            if h >= 0 and l >= 0:
                c = <unsigned char>(h * 16 + l)
                i += 2
        d[0] = c
        d += 1
        i += 1
    tmp.size = d - tmp.data
    return 0


cdef int _escape(_Buf* out, const unsigned char* p, Py_ssize_t n) except -1:
    _reserve(out, 2 * n)
    cdef unsigned char* d = out.data + out.size
    cdef unsigned char* start = d
    cdef Py_ssize_t i = 0, k
    cdef unsigned char c
    cdef uint64_t w
    while i < n:
        if i + 8 <= n:
            w = _load8(p + i)
            memcpy(d, p + i, 8)
            k = _plain_run(_equal(w, 0x22) | _equal(w, 0x5C))  # up to a '"' or a '\\'
            d += k
            i += k
            if k == 8:
                continue
        c = p[i]
        if c == 0x22 or c == 0x5C:
            d[0] = 0x5C
            d += 1
        d[0] = c
        d += 1
        i += 1
    out.size += d - start
    return 0


cdef inline int _put(_Buf* out, const char* s, Py_ssize_t n) except -1:
    _reserve(out, n)
    memcpy(out.data + out.size, s, n)
    out.size += n
    return 0


cdef inline int _put_int(_Buf* out, int64_t v) except -1:
    cdef char digits[24]
    cdef int k = 0
    cdef bint neg = v < 0
    cdef unsigned long long u = <unsigned long long>(-v) if neg else <unsigned long long>v
    while True:
        digits[k] = <char>(0x30 + u % 10)
        k += 1
        u //= 10
        if u == 0:
            break
    _reserve(out, k + 1)
    if neg:
        out.data[out.size] = 0x2D
        out.size += 1
    while k > 0:
        k -= 1
        out.data[out.size] = digits[k]
        out.size += 1
    return 0


cdef inline uint32_t _fnv(const unsigned char* p, Py_ssize_t n) noexcept:
    cdef uint32_t h = 2166136261u
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 16777619u
    return h


cdef inline int _reserved_slot(const unsigned char* k, Py_ssize_t n) noexcept:
    if n == 4 and memcmp(k, b"type", 4) == 0:
        return R_TYPE
    if n == 7 and memcmp(k, b"sent_at", 7) == 0:
        return R_SENT_AT
    if n == 10 and memcmp(k, b"session_id", 10) == 0:
        return R_SESSION
    if n == 3 and memcmp(k, b"url", 3) == 0:
        return R_URL
    if n == 8 and memcmp(k, b"referrer", 8) == 0:
        return R_REFERRER
    return -1


cdef class _Work:
    """Buffers reused across calls (the GIL serialises calls; no call re-enters)."""
    cdef _Buf text      # cleaned keys and values
    cdef _Buf tmp       # one percent-decoded key or value
    cdef _Buf out       # the encoded event
    cdef _Span* params  # distinct params, in first-seen order
    cdef Py_ssize_t nparams
    cdef Py_ssize_t roff[N_RESERVED]
    cdef Py_ssize_t rlen[N_RESERVED]
    cdef Py_ssize_t hoff[N_HEAD]
    cdef Py_ssize_t hlen[N_HEAD]

    def __cinit__(self):
        self.params = <_Span*>malloc(MAX_PARAMS * sizeof(_Span))
        if self.params == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.text.data)
        free(self.tmp.data)
        free(self.out.data)
        free(self.params)

    cdef int reset(self) except -1:
        cdef int i
        self.text.size = 0
        self.out.size = 0
        self.nparams = 0
        for i in range(N_RESERVED):
            self.rlen[i] = -1
        return 0

    cdef int head(self, int slot, object value) except -1:
        """Clean one header field into ``text`` (None → absent, length -1)."""
        cdef Py_ssize_t n
        cdef const char* p
        if value is None:
            self.hlen[slot] = -1
            return 0
        self.hoff[slot] = self.text.size
        self.hlen[slot] = self.clean_str(value)
        if self.hlen[slot] > MAX_VALUE:
            raise EventError(
                f"{_HEAD_NAMES[slot]} too long ({self.hlen[slot]} bytes, limit {MAX_VALUE})"
            )
        return 0

    cdef Py_ssize_t clean_str(self, object value) except -1:
        cdef Py_ssize_t n
        cdef const char* p
        cdef bytes raw
        if not PyUnicode_Check(value):
            raise TypeError("expected str")
        try:
            p = PyUnicode_AsUTF8AndSize(value, &n)
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
            return _clean(&self.text, <const unsigned char*>PyBytes_AS_STRING(raw),
                          PyBytes_GET_SIZE(raw))
        return _clean(&self.text, <const unsigned char*>p, n)

    cdef int pair(self, Py_ssize_t koff, Py_ssize_t klen, Py_ssize_t voff,
                  Py_ssize_t vlen) except -1:
        """Check the limits of one cleaned pair and file it (reserved slot or param)."""
        cdef int slot
        cdef uint32_t h
        cdef Py_ssize_t j
        cdef _Span* s
        if klen > MAX_KEY:
            raise EventError(f"key too long ({klen} bytes, limit {MAX_KEY})")
        if vlen > MAX_VALUE:
            raise EventError(f"value too long ({vlen} bytes, limit {MAX_VALUE})")
        slot = _reserved_slot(self.text.data + koff, klen)
        if slot >= 0:
            self.roff[slot] = voff
            self.rlen[slot] = vlen
            return 0
        h = _fnv(self.text.data + koff, klen)
        for j in range(self.nparams):
            s = &self.params[j]
            if s.khash == h and s.klen == klen and memcmp(
                self.text.data + s.koff, self.text.data + koff, klen
            ) == 0:
                s.voff = voff
                s.vlen = vlen
                return 0
        if self.nparams == MAX_PARAMS:
            raise EventError(f"too many params (limit {MAX_PARAMS})")
        s = &self.params[self.nparams]
        s.koff = koff
        s.klen = klen
        s.voff = voff
        s.vlen = vlen
        s.khash = h
        self.nparams += 1
        return 0

    cdef int query_pairs(self, const unsigned char* q, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, start, eq, end, koff, klen, voff, vlen
        while i <= n:
            start = i
            while i < n and q[i] != 0x26:  # '&'
                i += 1
            end = i
            i += 1
            if end == start:
                continue
            eq = start
            while eq < end and q[eq] != 0x3D:  # '='
                eq += 1
            _percent_decode(&self.tmp, q + start, eq - start)
            koff = self.text.size
            klen = _clean(&self.text, self.tmp.data, self.tmp.size)
            if eq < end:
                _percent_decode(&self.tmp, q + eq + 1, end - eq - 1)
            else:
                self.tmp.size = 0
            voff = self.text.size
            vlen = _clean(&self.text, self.tmp.data, self.tmp.size)
            self.pair(koff, klen, voff, vlen)
        return 0

    cdef int field_pairs(self, dict fields) except -1:
        cdef Py_ssize_t pos = 0, koff, klen, voff, vlen
        cdef PyObject* k
        cdef PyObject* v
        cdef object key, value
        cdef bytes raw
        while PyDict_Next(fields, &pos, &k, &v):
            key = <object>k
            value = <object>v
            if not PyUnicode_Check(key):
                raise EventError("keys must be strings")
            koff = self.text.size
            klen = self.clean_str(key)
            voff = self.text.size
            if PyUnicode_Check(value):
                vlen = self.clean_str(value)
            else:
                try:
                    raw = _orjson_dumps(value)
                except _JSONEncodeError:
                    raise EventError("value is not encodable as JSON") from None
                vlen = _clean(&self.text, <const unsigned char*>PyBytes_AS_STRING(raw),
                              PyBytes_GET_SIZE(raw))
            self.pair(koff, klen, voff, vlen)
        return 0

    cdef int string(self, Py_ssize_t off, Py_ssize_t n) except -1:
        """A JSON string, or null for an absent field (n < 0)."""
        if n < 0:
            return _put(&self.out, b"null", 4)
        _reserve(&self.out, 1)
        self.out.data[self.out.size] = 0x22
        self.out.size += 1
        _escape(&self.out, self.text.data + off, n)
        _reserve(&self.out, 1)
        self.out.data[self.out.size] = 0x22
        self.out.size += 1
        return 0

    cdef int sent_at(self) except -1:
        cdef Py_ssize_t n = self.rlen[R_SENT_AT], i
        cdef const unsigned char* p
        cdef int64_t v = 0
        if n < 1 or n > 15:
            return _put(&self.out, b"null", 4)
        p = self.text.data + self.roff[R_SENT_AT]
        for i in range(n):
            if p[i] < 0x30 or p[i] > 0x39:
                return _put(&self.out, b"null", 4)
            v = v * 10 + (p[i] - 0x30)
        return _put_int(&self.out, v)

    cdef bytes finish(self, int64_t received_at, bint bot):
        self.finish_into_out(received_at, bot)
        return PyBytes_FromStringAndSize(<char*>self.out.data, self.out.size)

    cdef int finish_into_out(self, int64_t received_at, bint bot) except -1:
        """The event into ``out`` (what ``finish`` returns as bytes)."""
        cdef _Buf* out = &self.out
        cdef Py_ssize_t j
        cdef _Span* s
        _put(out, b'{"id":', 6)
        self.string(self.hoff[H_ID], self.hlen[H_ID])
        _put(out, b',"tenant":', 10)
        self.string(self.hoff[H_TENANT], self.hlen[H_TENANT])
        _put(out, b',"type":', 8)
        if self.rlen[R_TYPE] >= 0:
            self.string(self.roff[R_TYPE], self.rlen[R_TYPE])
        else:
            self.string(self.hoff[H_TYPE], self.hlen[H_TYPE])
        _put(out, b',"received_at":', 15)
        _put_int(out, received_at)
        _put(out, b',"sent_at":', 11)
        self.sent_at()
        _put(out, b',"visitor_id":', 14)
        self.string(self.hoff[H_VISITOR], self.hlen[H_VISITOR])
        _put(out, b',"session_id":', 14)
        self.string(self.roff[R_SESSION], self.rlen[R_SESSION])
        _put(out, b',"url":', 7)
        if self.rlen[R_URL] >= 0:
            self.string(self.roff[R_URL], self.rlen[R_URL])
        else:
            self.string(self.hoff[H_URL], self.hlen[H_URL])
        _put(out, b',"referrer":', 12)
        self.string(self.roff[R_REFERRER], self.rlen[R_REFERRER])
        _put(out, b',"ip":', 6)
        self.string(self.hoff[H_IP], self.hlen[H_IP])
        _put(out, b',"user_agent":', 14)
        self.string(self.hoff[H_UA], self.hlen[H_UA])
        if bot:
            _put(out, b',"bot":true,"params":{', 22)
        else:
            _put(out, b',"bot":false,"params":{', 23)
        for j in range(self.nparams):
            s = &self.params[j]
            if j:
                _put(out, b",", 1)
            self.string(s.koff, s.klen)
            _put(out, b":", 1)
            self.string(s.voff, s.vlen)
        _put(out, b"}}", 2)
        if out.size > MAX_EVENT:
            raise EventError(f"event too large ({out.size} bytes, limit {MAX_EVENT})")
        return 0

    cdef int heads(self, str id, str tenant, str type, str visitor_id, object url,
                   object ip, object user_agent) except -1:
        self.reset()
        self.head(H_ID, id)
        self.head(H_TENANT, tenant)
        self.head(H_TYPE, type)
        self.head(H_VISITOR, visitor_id)
        self.head(H_URL, url)
        self.head(H_IP, ip)
        self.head(H_UA, user_agent)
        return 0


cdef _Work _work = _Work()


def encode_query(bytes query not None, str id not None, str tenant not None,
                 str type not None, int64_t received_at, str visitor_id not None,
                 object url, object ip, object user_agent, bint bot):
    """One event from raw query-string bytes and the header values."""
    _work.heads(id, tenant, type, visitor_id, url, ip, user_agent)
    _work.query_pairs(<const unsigned char*>PyBytes_AS_STRING(query), PyBytes_GET_SIZE(query))
    return _work.finish(received_at, bot)


def encode_fields(dict fields not None, str id not None, str tenant not None,
                  str type not None, int64_t received_at, str visitor_id not None,
                  object url, object ip, object user_agent, bint bot):
    """One event from a parsed JSON object and the header values."""
    _work.heads(id, tenant, type, visitor_id, url, ip, user_agent)
    _work.field_pairs(fields)
    return _work.finish(received_at, bot)


# -- the pixel's spool record (issue 17) -----------------------------------------------------
#
# The pixel path encoded an event to bytes, then the spool checksummed it (three crc32 calls),
# packed a header and appended four pieces: five crossings of the Python boundary and two
# copies per event. Here the event goes from the encoder's buffer straight into the spool's
# pending buffer, framed. The layout is scratchd/spool.py's record:
# [u32 length][u32 crc32][u16 tenant length][u16 key length][tenant][key][event], little
# endian, length = 8 + the three parts, crc32 over the three parts.

cdef extern from "zlib.h" nogil:
    unsigned long c_crc32 "crc32"(unsigned long crc, const unsigned char* buf, unsigned int n)

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize


cdef inline void _le32(unsigned char* p, uint32_t v) noexcept:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


def frame_query(bytearray pending not None, bytes tenant_raw not None, bytes key not None,
                Py_ssize_t limit, bytes query not None, str id not None, str tenant not None,
                str type not None, int64_t received_at, str visitor_id not None,
                object url, object ip, object user_agent, bint bot):
    """``encode_query``, appended to ``pending`` as one spool record (scratchd/spool.py's
    layout) keyed by ``tenant_raw`` and ``key``. Returns the event's length; an event longer
    than ``limit`` is not appended. Raises EventError, leaving ``pending`` as it was."""
    cdef Py_ssize_t tlen = PyBytes_GET_SIZE(tenant_raw)
    cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
    cdef Py_ssize_t n, at
    cdef unsigned char* p
    cdef const unsigned char* ev
    cdef unsigned long crc
    if tlen > 0xFFFF or klen > 0xFFFF:
        raise ValueError("tenant and key are at most 65535 bytes")
    _work.heads(id, tenant, type, visitor_id, url, ip, user_agent)
    _work.query_pairs(<const unsigned char*>PyBytes_AS_STRING(query), PyBytes_GET_SIZE(query))
    _work.finish_into_out(received_at, bot)
    n = _work.out.size
    if n > limit:
        return n
    at = PyByteArray_GET_SIZE(pending)
    PyByteArray_Resize(pending, at + 12 + tlen + klen + n)
    p = <unsigned char*>PyByteArray_AS_STRING(pending) + at
    ev = _work.out.data
    crc = c_crc32(0, <const unsigned char*>PyBytes_AS_STRING(tenant_raw), <unsigned int>tlen)
    crc = c_crc32(crc, <const unsigned char*>PyBytes_AS_STRING(key), <unsigned int>klen)
    crc = c_crc32(crc, ev, <unsigned int>n)
    _le32(p, <uint32_t>(8 + tlen + klen + n))
    _le32(p + 4, <uint32_t>crc)
    p[8] = tlen & 0xFF
    p[9] = tlen >> 8
    p[10] = klen & 0xFF
    p[11] = klen >> 8
    memcpy(p + 12, PyBytes_AS_STRING(tenant_raw), tlen)
    memcpy(p + 12 + tlen, PyBytes_AS_STRING(key), klen)
    memcpy(p + 12 + tlen + klen, ev, n)
    return n


# -- event ids ---------------------------------------------------------------------------------

cdef const char* _HEXDIGITS = b"0123456789abcdef"
_urandom = __import__("os").urandom


cdef class Uuid7:
    """UUIDv7 (RFC 9562 §5.7) as text: 48-bit Unix ms, version 7, a 12-bit counter in
    ``rand_a`` that keeps ids increasing within a millisecond (§6.2 method 1, random start
    below 0x400 so there is room to count), variant 0b10, 62 random bits.

    Randomness comes from ``os.urandom`` read in 4 KiB blocks; the pure twin is
    ``_encoder_py.Uuid7`` (same layout and ordering rules). The batch profile showed the
    Python formatting at ~15% of a ``POST /batch``."""

    cdef int64_t _last_ms
    cdef int _counter
    cdef bytes _pool
    cdef Py_ssize_t _pos

    def __cinit__(self):
        self._last_ms = 0
        self._counter = 0
        self._pool = b""
        self._pos = 0

    cdef inline unsigned long long _random64(self) except? 0:
        cdef const unsigned char* p
        cdef unsigned long long v = 0
        cdef int i
        if self._pos + 8 > PyBytes_GET_SIZE(self._pool):
            self._pool = _urandom(4096)
            self._pos = 0
        p = <const unsigned char*>PyBytes_AS_STRING(self._pool) + self._pos
        for i in range(8):
            v = (v << 8) | p[i]
        self._pos += 8
        return v

    def new(self, object now_ms=None):
        """The next id; ``now_ms`` fixes the clock (tests), else the wall clock."""
        cdef int64_t ms = _time_ns() // 1000000 if now_ms is None else <int64_t>now_ms
        cdef unsigned long long rnd = self._random64()
        cdef char out[36]
        cdef int i
        cdef unsigned long long t
        if ms <= self._last_ms:
            ms = self._last_ms
            self._counter += 1
            if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                self._counter = <int>(self._random64() >> 54)
        else:
            self._counter = <int>(self._random64() >> 54)  # 10 random bits
        self._last_ms = ms
        t = <unsigned long long>ms & 0xFFFFFFFFFFFFULL
        for i in range(8):
            out[i] = _HEXDIGITS[(t >> (44 - 4 * i)) & 0xF]
        out[8] = 0x2D
        for i in range(4):
            out[9 + i] = _HEXDIGITS[(t >> (12 - 4 * i)) & 0xF]
        out[13] = 0x2D
        out[14] = 0x37  # version 7
        for i in range(3):
            out[15 + i] = _HEXDIGITS[(self._counter >> (8 - 4 * i)) & 0xF]
        out[18] = 0x2D
        out[19] = _HEXDIGITS[0x8 | ((rnd >> 60) & 0x3)]  # variant 0b10
        for i in range(3):
            out[20 + i] = _HEXDIGITS[(rnd >> (56 - 4 * i)) & 0xF]
        out[23] = 0x2D
        for i in range(12):
            out[24 + i] = _HEXDIGITS[(rnd >> (44 - 4 * i)) & 0xF]
        return PyUnicode_DecodeASCII(out, 36, NULL)


cdef Uuid7 _ids = Uuid7()
new_id = _ids.new


# -- the spool's group-commit syncer (issue 17) ----------------------------------------------
#
# A spool commit's fdatasync ran in a ThreadPoolExecutor worker, which takes the GIL back
# after the syscall (to resolve a concurrent future and call the loop's call_soon_threadsafe)
# and again to fetch its next work item: under the pixel benchmark that forced the event loop
# off the GIL about twice per commit (24 futex calls per fdatasync in strace -c). This loop
# never holds the GIL: requests and results are 8-byte messages on pipes (a pipe write of
# at most PIPE_BUF bytes is atomic, POSIX write(2), so several loops may share one pipe).

from libc.errno cimport EINTR, errno
from libc.stdint cimport int32_t


cdef extern from "unistd.h" nogil:
    ssize_t c_read "read"(int fd, void* buf, size_t count)
    ssize_t c_write "write"(int fd, const void* buf, size_t count)
    int c_fdatasync "fdatasync"(int fd)


def sync_loop(int requests, int results):
    """Serve fdatasync requests until ``requests`` reaches end of file: each request is
    ``(fd, seq)``, each result ``(seq, errno)`` (0 on success), native int32s. Runs in a
    thread of its own, without the GIL from start to end."""
    cdef int32_t req[2]
    cdef int32_t res[2]
    cdef ssize_t n
    with nogil:
        while True:
            n = c_read(requests, req, 8)
            if n < 0 and errno == EINTR:
                continue
            if n != 8:  # end of file (the spool closed the pipe) or a broken pipe
                break
            res[0] = req[1]
            res[1] = 0
            if c_fdatasync(req[0]) != 0:
                res[1] = errno
            while True:
                n = c_write(results, res, 8)
                if n < 0 and errno == EINTR:
                    continue
                break
            if n != 8:
                break
