"""Compiled MIME sniffer: ``sniff(data) -> "type/subtype"`` for a body's first 1 KiB.

A C-level twin of src/pazari/mime/_sniff_py.py, which holds the commentary on every rule
(WHATWG MIME Sniffing Standard sections, libmagic's magic files and where we depart from
them). Both must return identical results: tests/mime/test_sniff.py runs them side by side.
One call crosses the boundary per body; the answer is one of the interned constants below.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcmp

ctypedef const unsigned char* cbuf

EMPTY = "application/x-empty"
OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain"

cdef object S_EMPTY = EMPTY
cdef object S_OCTET = OCTET_STREAM
cdef object S_TEXT = TEXT_PLAIN
cdef object S_TAR = "application/x-tar"
cdef object S_JSON = "application/json"
cdef object S_NDJSON = "application/x-ndjson"
cdef object S_CSV = "text/csv"
cdef object S_JPEG = "image/jpeg"
cdef object S_PNG = "image/png"
cdef object S_GIF = "image/gif"
cdef object S_WEBP = "image/webp"
cdef object S_WAV = "audio/x-wav"
cdef object S_AVI = "video/x-msvideo"
cdef object S_BMP = "image/bmp"
cdef object S_ICO = "image/vnd.microsoft.icon"
cdef object S_CUR = "image/x-win-bitmap"
cdef object S_TIFF = "image/tiff"
cdef object S_3GPP = "video/3gpp"
cdef object S_3GPP2 = "video/3gpp2"
cdef object S_QT = "video/quicktime"
cdef object S_PSD = "image/vnd.adobe.photoshop"
cdef object S_ZIP = "application/zip"
cdef object S_GZIP = "application/gzip"
cdef object S_7Z = "application/x-7z-compressed"
cdef object S_RAR = "application/x-rar"
cdef object S_PDF = "application/pdf"
cdef object S_PS = "application/postscript"
cdef object S_SVG = "image/svg+xml"
cdef object S_XML = "text/xml"
cdef object S_HTML = "text/html"
cdef object S_WEBM = "video/webm"
cdef object S_MKV = "video/x-matroska"
cdef object S_OGG_AUDIO = "audio/ogg"
cdef object S_OGG_VIDEO = "video/ogg"
cdef object S_MPEG = "audio/mpeg"
cdef object S_ADTS = "audio/x-hx-aac-adts"
cdef object S_MIDI = "audio/midi"
cdef object S_AIFF = "audio/x-aiff"
cdef object S_WOFF = "font/woff"
cdef object S_WOFF2 = "font/woff2"
cdef object S_OTF = "application/vnd.ms-opentype"
cdef object S_TTC = "font/ttf"

# ISO BMFF major brand → name; keys are the 4 brand bytes as bytes (see the pure twin).
cdef dict FTYP_BRANDS = {
    b"avif": "image/avif", b"avis": "image/avif",
    b"heic": "image/heic", b"heix": "image/heic",
    b"hevc": "image/heic-sequence", b"hevx": "image/heic-sequence",
    b"mif1": "image/heif", b"heim": "image/heif", b"heis": "image/heif",
    b"msf1": "image/heif-sequence", b"hevm": "image/heif-sequence",
    b"isom": "video/mp4", b"iso2": "video/mp4", b"iso3": "video/mp4", b"iso4": "video/mp4",
    b"iso5": "video/mp4", b"iso6": "video/mp4", b"iso7": "video/mp4", b"iso8": "video/mp4",
    b"iso9": "video/mp4", b"isml": "video/mp4", b"mp41": "video/mp4", b"mp42": "video/mp4",
    b"mmp4": "video/mp4", b"avc1": "video/mp4", b"dash": "video/mp4", b"F4V ": "video/mp4",
    b"M4P ": "video/mp4",
    b"M4V ": "video/x-m4v", b"M4VH": "video/x-m4v", b"M4VP": "video/x-m4v",
    b"M4A ": "audio/x-m4a", b"M4B ": "audio/mp4", b"MSNV": "audio/mp4", b"NDAS": "audio/mp4",
    b"qt  ": "video/quicktime", b"mqt ": "video/quicktime",
    b"jp2 ": "image/jp2", b"jpx ": "image/jpx", b"jpm ": "image/jpm",
}

DEF JSON_MAX_LEVEL = 500
DEF CSV_LINES = 10


cdef inline bint _is_binary_byte(unsigned char c) noexcept nogil:
    # libmagic encoding.c text_chars F entries.
    return c < 0x07 or (0x0E <= c <= 0x1A) or (0x1C <= c <= 0x1F) or c == 0x7F


cdef inline bint _is_cspace(unsigned char c) noexcept nogil:
    return c == 0x20 or (0x09 <= c <= 0x0D)


cdef inline bint _is_json_space(unsigned char c) noexcept nogil:
    return c == 0x20 or c == 0x09 or c == 0x0A or c == 0x0D


cdef inline bint _is_digit(unsigned char c) noexcept nogil:
    return 0x30 <= c <= 0x39


cdef inline bint _starts(cbuf p, Py_ssize_t n, const char* lit, Py_ssize_t k) noexcept nogil:
    return n >= k and memcmp(p, lit, k) == 0


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    if 0x41 <= c <= 0x5A:
        return c + 0x20
    return c


def sniff(data):
    """Return the bare ``type/subtype`` of a body from its first bytes (≤ 1 KiB expected)."""
    cdef bytes buf
    if type(data) is bytes:
        buf = <bytes>data
    else:
        buf = bytes(data)
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef int kind, text
    if n == 0:
        return S_EMPTY
    if n == 1:
        return S_OCTET
    if _is_tar(p, n):
        return S_TAR
    kind = _json_kind(p, n)
    if kind == 1:
        return S_JSON
    if kind == 2:
        return S_NDJSON
    text = _looks_text(p, n)
    if text and _is_csv(p, n):
        return S_CSV
    found = _sniff_binary(p, n)
    if found is not None:
        return found
    if not text:
        return S_OCTET
    if text == 1:
        if _starts(p, n, b"\xef\xbb\xbf", 3):
            found = _sniff_text(p + 3, n - 3)
        else:
            found = _sniff_text(p, n)
        if found is not None:
            return found
    return S_TEXT


cdef int _looks_text(cbuf p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned int cp
    cdef bint big
    for i in range(n):
        if _is_binary_byte(p[i]):
            break
    else:
        return 1
    if n >= 4 and ((p[0] == 0xFF and p[1] == 0xFE and p[2] == 0 and p[3] == 0)
                   or (p[0] == 0 and p[1] == 0 and p[2] == 0xFE and p[3] == 0xFF)):
        big = p[0] == 0
        i = 4
        while i + 3 < n:
            if big:
                cp = (<unsigned int>p[i] << 24) | (<unsigned int>p[i + 1] << 16) | (<unsigned int>p[i + 2] << 8) | p[i + 3]
            else:
                cp = (<unsigned int>p[i + 3] << 24) | (<unsigned int>p[i + 2] << 16) | (<unsigned int>p[i + 1] << 8) | p[i]
            if cp == 0xFFFE or (cp < 128 and _is_binary_byte(<unsigned char>cp)):
                return 0
            i += 4
        return 2
    if (p[0] == 0xFF and p[1] == 0xFE) or (p[0] == 0xFE and p[1] == 0xFF):
        big = p[0] == 0xFE
        i = 2
        while i + 1 < n:
            if big:
                cp = (<unsigned int>p[i] << 8) | p[i + 1]
            else:
                cp = (<unsigned int>p[i + 1] << 8) | p[i]
            if cp == 0xFFFE or (cp < 128 and _is_binary_byte(<unsigned char>cp)):
                return 0
            i += 2
        return 2
    return 0


cdef long _tar_octal(cbuf p, Py_ssize_t i, int digits) noexcept nogil:
    # Reads stay inside the 512-byte header the caller checked (148..155 plus one byte).
    cdef long value = 0
    while _is_cspace(p[i]):
        i += 1
        digits -= 1
        if digits <= 0:
            return -1
    while digits > 0 and 0x30 <= p[i] <= 0x37:
        value = (value << 3) | (p[i] - 0x30)
        i += 1
        digits -= 1
    if digits > 0 and p[i] != 0 and not _is_cspace(p[i]):
        return -1
    return value


cdef bint _is_tar(cbuf p, Py_ssize_t n) noexcept nogil:
    cdef long recorded, total = 8 * 0x20
    cdef Py_ssize_t i
    if n < 512:
        return False
    recorded = _tar_octal(p, 148, 8)
    if recorded < 0:
        return False
    for i in range(148):
        total += p[i]
    for i in range(156, 512):
        total += p[i]
    return total == recorded


# --- JSON (libmagic is_json.c); each helper returns success and moves *pos.

cdef inline Py_ssize_t _json_skip(cbuf p, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    while i < end and _is_json_space(p[i]):
        i += 1
    return i


cdef bint _json_string(cbuf p, Py_ssize_t* pos, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t i = pos[0]
    cdef unsigned char c, e
    cdef int k
    while i < end:
        c = p[i]
        i += 1
        if c == 0:
            pos[0] = i
            return False
        if c == 0x22:
            pos[0] = i
            return True
        if c == 0x5C:
            if i == end:
                pos[0] = i
                return False
            e = p[i]
            i += 1
            if e == 0x22 or e == 0x5C or e == 0x2F or e == 0x62 or e == 0x66 or e == 0x6E or e == 0x72 or e == 0x74:
                continue
            if e != 0x75:
                pos[0] = i
                return False
            if end - i < 4:
                pos[0] = end
                return False
            for k in range(4):
                c = p[i]
                if not (_is_digit(c) or 0x61 <= c <= 0x66 or 0x41 <= c <= 0x46):
                    pos[0] = i + 1
                    return False
                i += 1
    pos[0] = i
    return False


cdef bint _json_const(cbuf p, Py_ssize_t* pos, Py_ssize_t end, const char* rest, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t i = pos[0]
    cdef Py_ssize_t after = i + k
    cdef Py_ssize_t j
    if after > end:
        after = end
    for j in range(after - i):
        if p[i + j] != <unsigned char>rest[j]:
            pos[0] = i + j + 1
            return False
    pos[0] = after
    return True


cdef bint _json_number(cbuf p, Py_ssize_t* pos, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t i = pos[0]
    cdef bint got = False
    if i < end and p[i] == 0x2D:
        i += 1
    while i < end and _is_digit(p[i]):
        i += 1
        got = True
    if i == end:
        pos[0] = i
        return got
    if p[i] == 0x2E:
        i += 1
    while i < end and _is_digit(p[i]):
        i += 1
        got = True
    if i == end:
        pos[0] = i
        return got
    if got and (p[i] == 0x65 or p[i] == 0x45):
        i += 1
        got = False
        if i == end:
            pos[0] = i
            return got
        if p[i] == 0x2B or p[i] == 0x2D:
            i += 1
        while i < end and _is_digit(p[i]):
            i += 1
            got = True
    pos[0] = i
    return got


cdef bint _json_array(cbuf p, Py_ssize_t* pos, Py_ssize_t end, int lvl, Py_ssize_t* counts) noexcept nogil:
    cdef Py_ssize_t i = pos[0]
    while i < end:
        i = _json_skip(p, i, end)
        if i == end:
            break
        if p[i] == 0x5D:
            pos[0] = i + 1
            return True
        pos[0] = i
        if not _json_value(p, pos, end, lvl + 1, counts):
            return False
        i = pos[0]
        if i == end:
            return False
        if p[i] == 0x2C:
            i += 1
            continue
        if p[i] == 0x5D:
            pos[0] = i + 1
            return True
        return False
    pos[0] = i
    return False


cdef bint _json_object(cbuf p, Py_ssize_t* pos, Py_ssize_t end, int lvl, Py_ssize_t* counts) noexcept nogil:
    cdef Py_ssize_t i = pos[0]
    cdef unsigned char c
    while i < end:
        i = _json_skip(p, i, end)
        if i == end:
            break
        if p[i] == 0x7D:
            pos[0] = i + 1
            return True
        if p[i] != 0x22:
            pos[0] = i + 1
            return False
        pos[0] = i + 1
        if not _json_string(p, pos, end):
            return False
        i = _json_skip(p, pos[0], end)
        if i == end or p[i] != 0x3A:
            pos[0] = i
            return False
        pos[0] = i + 1
        if not _json_value(p, pos, end, lvl + 1, counts):
            return False
        i = pos[0]
        if i == end:
            return False
        c = p[i]
        i += 1
        if c == 0x2C:
            continue
        if c == 0x7D:
            pos[0] = i
            return True
        pos[0] = i - 1
        return False
    pos[0] = i
    return False


cdef bint _json_value(cbuf p, Py_ssize_t* pos, Py_ssize_t end, int lvl, Py_ssize_t* counts) noexcept nogil:
    cdef Py_ssize_t i = _json_skip(p, pos[0], end)
    cdef unsigned char c
    cdef bint ok
    if i == end or lvl > JSON_MAX_LEVEL:
        pos[0] = i
        return False
    c = p[i]
    pos[0] = i + 1
    if c == 0x22:
        ok = _json_string(p, pos, end)
    elif c == 0x5B:
        ok = _json_array(p, pos, end, lvl + 1, counts)
        if ok:
            counts[0] += 1
    elif c == 0x7B:
        ok = _json_object(p, pos, end, lvl + 1, counts)
        if ok:
            counts[0] += 1
    elif c == 0x74:
        ok = _json_const(p, pos, end, b"rue", 3)
    elif c == 0x66:
        ok = _json_const(p, pos, end, b"alse", 4)
    elif c == 0x6E:
        ok = _json_const(p, pos, end, b"ull", 3)
    else:
        pos[0] = i
        ok = _json_number(p, pos, end)
    pos[0] = _json_skip(p, pos[0], end)
    return ok


cdef int _json_kind(cbuf p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t counts = 0
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t first
    if not _json_value(p, &pos, n, 0, &counts):
        return 0
    if pos == n:
        return 1 if counts else 0
    first = _json_skip(p, 0, n)
    if p[first] == p[pos]:
        if _json_value(p, &pos, n, 1, &counts):
            return 2 if counts else 0
    return 0


cdef bint _is_csv(cbuf p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t fields = 0, total = 0, lines = 0, i = 0
    cdef unsigned char c, q
    cdef bint quote
    while i < n:
        c = p[i]
        i += 1
        if c == 0x22:
            quote = False
            while True:
                if i >= n:
                    i = n
                    break
                q = p[i]
                i += 1
                if q != 0x22:
                    if quote:
                        i -= 1
                        break
                    continue
                quote = not quote
        elif c == 0x2C:
            fields += 1
        elif c == 0x0A:
            lines += 1
            if lines == CSV_LINES:
                return total != 0 and total == fields
            if total == 0:
                if fields == 0:
                    return False
                total = fields
            elif total != fields:
                return False
            fields = 0
    return total != 0 and lines > 2


# --- binary magic

cdef object _sniff_mpeg_frame(cbuf p, Py_ssize_t n):
    cdef unsigned char b1, b2
    cdef int layer, bitrate
    if n < 4 or p[0] != 0xFF:
        return None
    b1 = p[1]
    if b1 & 0xF6 == 0xF0:
        return S_ADTS
    if b1 & 0xE0 != 0xE0:
        return None
    layer = (b1 >> 1) & 3
    if (b1 >> 3) & 3 == 1 or layer == 0 or layer == 3:
        return None
    b2 = p[2]
    bitrate = b2 >> 4
    if bitrate == 0 or bitrate == 15:
        return None
    return S_MPEG


cdef inline bint _odf_char(unsigned char c) noexcept nogil:
    return (0x61 <= c <= 0x7A) or c == 0x2D or c == 0x2E or _is_digit(c)


cdef object _sniff_zip(cbuf p, Py_ssize_t n):
    cdef Py_ssize_t end, k, start
    if _starts(p, n, b"PK\x03\x04", 4):
        if n < 50:
            return None
        if memcmp(p + 30, b"mimetype", 8) == 0:
            end = 120 if n > 120 else n
            start = 38
            if _starts(p + start, end - start, b"application/epub+zip", 20):
                k = start + 20
            elif _starts(p + start, end - start, b"application/vnd.oasis.opendocument.", 35):
                k = start + 35
            else:
                k = 0
            if k:
                while k < end and _odf_char(p[k]):
                    k += 1
                return (<const char*>p)[start:k].decode("ascii")
        return S_ZIP
    if _starts(p, n, b"PK\x05\x06", 4) or _starts(p, n, b"PK\x07\x08", 4):
        return S_ZIP
    return None


cdef object _sniff_ebml(cbuf p, Py_ssize_t n):
    cdef Py_ssize_t i = 4
    while i + 1 < n:
        if p[i] == 0x42 and p[i + 1] == 0x82:
            if _starts(p + i + 3, n - i - 3, b"webm", 4) if i + 3 <= n else False:
                return S_WEBM
            if _starts(p + i + 3, n - i - 3, b"matroska", 8) if i + 3 <= n else False:
                return S_MKV
            return None
        i += 1
    return None


cdef object _sniff_ogg(cbuf p, Py_ssize_t n):
    if n <= 28:
        return None
    cdef cbuf c = p + 28
    cdef Py_ssize_t m = n - 28
    if (_starts(c, m, b"\x01vorbis", 7) or _starts(c, m, b"OpusHead", 8)
            or _starts(c, m, b"Speex   ", 8) or _starts(c, m, b"\x7fFLAC", 5)):
        return S_OGG_AUDIO
    if _starts(c, m, b"\x80theora", 7) or _starts(c, m, b"fishead\x00", 8):
        return S_OGG_VIDEO
    return None


cdef inline unsigned long _le32(cbuf p) noexcept nogil:
    return (<unsigned long>p[0]) | (<unsigned long>p[1] << 8) | (<unsigned long>p[2] << 16) | (<unsigned long>p[3] << 24)


cdef object _sniff_binary(cbuf p, Py_ssize_t n):
    cdef unsigned char b0 = p[0]
    cdef unsigned long dib
    # Images: mimesniff §6.1.
    if b0 == 0xFF:
        if n >= 4 and p[1] == 0xD8 and p[2] == 0xFF:
            return S_JPEG
        return _sniff_mpeg_frame(p, n)
    if _starts(p, n, b"\x89PNG\r\n\x1a\n", 8):
        if _starts(p + 8, n - 8, b"\x00\x00\x00\x0dIHDR", 8):
            return S_PNG
        return None
    if _starts(p, n, b"GIF8", 4):
        return S_GIF
    if _starts(p, n, b"RIFF", 4) and n >= 12:
        if memcmp(p + 8, b"WEBP", 4) == 0:
            return S_WEBP
        if memcmp(p + 8, b"WAVE", 4) == 0:
            return S_WAV
        if memcmp(p + 8, b"AVI ", 4) == 0:
            return S_AVI
        return None
    if _starts(p, n, b"BM", 2):
        if n >= 18:
            dib = _le32(p + 14)
            if dib == 12 or dib == 16 or dib == 40 or dib == 52 or dib == 56 or dib == 64 or dib == 108 or dib == 124:
                return S_BMP
        return None
    if n >= 4 and p[0] == 0 and p[1] == 0 and (p[2] == 1 or p[2] == 2) and p[3] == 0:
        if n >= 10 and (p[9] == 0 or p[9] == 0xFF):
            return S_ICO if p[2] == 1 else S_CUR
        return None
    if (_starts(p, n, b"II*\x00", 4) or _starts(p, n, b"MM\x00*", 4)
            or _starts(p, n, b"II+\x00", 4) or _starts(p, n, b"MM\x00+", 4)):
        return S_TIFF
    if n >= 12 and memcmp(p + 4, b"ftyp", 4) == 0:
        if p[8] == 0x33 and p[9] == 0x67:  # "3g"
            return S_3GPP2 if p[10] == 0x32 else S_3GPP
        return FTYP_BRANDS.get((<const char*>p)[8:12])
    if n >= 8 and (memcmp(p + 4, b"moov", 4) == 0 or memcmp(p + 4, b"mdat", 4) == 0):
        return S_QT
    if _starts(p, n, b"8BPS", 4):
        if n >= 6 and p[4] == 0 and (p[5] == 1 or p[5] == 2):
            return S_PSD
        return None
    # Archives: mimesniff §6.3.
    if _starts(p, n, b"PK", 2):
        return _sniff_zip(p, n)
    if b0 == 0x1F:
        if n >= 4 and p[1] == 0x8B:
            return S_GZIP
        return None
    if _starts(p, n, b"7z\xbc\xaf\x27\x1c", 6):
        return S_7Z if n >= 8 else None
    if _starts(p, n, b"Rar!\x1a\x07\x00", 7) or _starts(p, n, b"Rar!\x1a\x07\x01\x00", 8):
        return S_RAR
    # Documents: mimesniff §7.1.
    if _starts(p, n, b"%PDF-", 5) or _starts(p, n, b"\n%PDF-", 6) or _starts(p, n, b"\xef\xbb\xbf%PDF-", 8):
        return S_PDF
    if _starts(p, n, b"%!", 2):
        return S_PS
    if _starts(p, n, b"<svg", 4):
        return S_SVG
    # Media: mimesniff §6.2.
    if _starts(p, n, b"\x1a\x45\xdf\xa3", 4):
        return _sniff_ebml(p, n)
    if _starts(p, n, b"OggS\x00", 5):
        return _sniff_ogg(p, n)
    if _starts(p, n, b"ID3", 3):
        if n >= 10 and 2 <= p[3] <= 4:
            return S_MPEG
        return None
    if _starts(p, n, b"MThd\x00\x00\x00\x06", 8):
        return S_MIDI
    if _starts(p, n, b"FORM", 4) and n >= 12 and (memcmp(p + 8, b"AIFF", 4) == 0 or memcmp(p + 8, b"AIFC", 4) == 0):
        return S_AIFF
    # Fonts: mimesniff §6.4.
    if _starts(p, n, b"wOFF", 4):
        return S_WOFF
    if _starts(p, n, b"wOF2", 4):
        return S_WOFF2
    if _starts(p, n, b"OTTO", 4):
        return S_OTF
    if _starts(p, n, b"ttcf", 4):
        return S_TTC
    return None


# --- text tests (libmagic Magdir/sgml, pdf)

cdef Py_ssize_t _match_compact(cbuf p, Py_ssize_t n, Py_ssize_t i, const char* needle, Py_ssize_t k) noexcept nogil:
    # Case-insensitive (needles are lower case); a space matches one or more whitespace bytes.
    cdef Py_ssize_t j
    cdef unsigned char c
    for j in range(k):
        c = <unsigned char>needle[j]
        if c == 0x20:
            if i >= n or not _is_cspace(p[i]):
                return -1
            while i < n and _is_cspace(p[i]):
                i += 1
        else:
            if i >= n or _lower(p[i]) != c:
                return -1
            i += 1
    return i


cdef bint _find_compact(cbuf p, Py_ssize_t n, const char* needle, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char c0 = <unsigned char>needle[0]
    cdef unsigned char c1 = <unsigned char>needle[1]
    for i in range(n - 1):
        if p[i] == c0 and _lower(p[i + 1]) == c1 and _match_compact(p, n, i, needle, k) >= 0:
            return True
    return False


cdef bint _find(cbuf p, Py_ssize_t n, Py_ssize_t start, Py_ssize_t stop, const char* needle, Py_ssize_t k) noexcept nogil:
    # Occurrence of needle starting in [start, stop - k], like bytes.find(needle, start, stop).
    cdef Py_ssize_t i
    if stop > n:
        stop = n
    i = start
    while i + k <= stop:
        if memcmp(p + i, needle, k) == 0:
            return True
        i += 1
    return False


cdef object _sniff_text(cbuf p, Py_ssize_t n):
    cdef Py_ssize_t i
    if n >= 5 and _match_compact(p, n, 0, b"<?xml", 5) >= 0:
        if _find(p, n, 19, n, b"<svg", 4):
            return S_SVG
        return S_XML
    if _match_compact(p, n, 0, b"<!doctype svg", 13) >= 0:
        return S_SVG
    if _find(p, n, 0, 256 + 5, b"%PDF-", 5):
        return S_PDF
    if (_find_compact(p, n, b"<!doctype html", 14)
            or _find_compact(p, n, b"<head>", 6) or _find_compact(p, n, b"<head ", 6)
            or _find_compact(p, n, b"<title>", 7) or _find_compact(p, n, b"<title ", 7)
            or _find_compact(p, n, b"<html>", 6) or _find_compact(p, n, b"<html ", 6)
            or _find_compact(p, n, b"<script>", 8) or _find_compact(p, n, b"<script ", 8)
            or _find_compact(p, n, b"<style>", 7) or _find_compact(p, n, b"<style ", 7)
            or _find_compact(p, n, b"<table>", 7) or _find_compact(p, n, b"<table ", 7)
            or _find_compact(p, n, b"<a href=", 8)):
        return S_HTML
    return None
