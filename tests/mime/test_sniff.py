"""The sniffer: the corpus, the hand-written edge cases, and compiled ≡ pure."""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pazari.mime
from pazari.mime import _sniff_py

from .conftest import Sniff, _compiled
from .corpus import SNIFF_LEN, Sample


def test_compiled_module_loaded() -> None:
    """A broken build must not hide behind the pure twin."""
    if os.environ.get("PAZARI_NO_EXTENSIONS", "") == "1":
        assert not pazari.mime.COMPILED
        assert pazari.mime.sniff is _sniff_py.sniff
        return
    mod = _compiled()
    assert mod is not None, "pazari.mime._sniff is not built: run `make build`"
    assert mod.__file__ is not None and not mod.__file__.endswith(".py")
    assert pazari.mime.COMPILED
    assert pazari.mime.sniff is mod.sniff


def test_corpus(sniff_impl: Sniff, corpus: list[Sample]) -> None:
    wrong = {s.name: sniff_impl(s.head) for s in corpus if sniff_impl(s.head) != s.expected}
    assert wrong == {}


# (id, body, expected): the rules at their edges, each checked against libmagic 5.44 by hand.
EDGE_CASES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "application/x-empty"),
    ("one-byte", b"a", "application/octet-stream"),  # libmagic: very short file
    ("two-bytes", b"ab", "text/plain"),
    ("jpeg-3-bytes", b"\xff\xd8\xff", "text/plain"),  # libmagic needs a 16-bit word at 2
    ("jpeg-4-bytes", b"\xff\xd8\xff\xe0", "image/jpeg"),
    ("png-sig-only", b"\x89PNG\r\n\x1a\n", "application/octet-stream"),
    ("png-ihdr", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "image/png"),
    ("gif8-any", b"GIF8x" + b"abc" * 5, "image/gif"),
    ("webp-no-vp", b"RIFF\x24\x00\x00\x00WEBP" + bytes(8), "image/webp"),
    ("bmp-bare-bm", b"BM" + b"x" * 40, "text/plain"),
    ("bmp-dib40", b"BM" + bytes(12) + b"\x28\x00\x00\x00" + bytes(20), "image/bmp"),
    ("cursor", b"\x00\x00\x02\x00\x01\x00\x10\x10\x00\x00" + bytes(20), "image/x-win-bitmap"),
    ("bigtiff", b"II+\x00\x08\x00\x00\x00", "image/tiff"),
    (
        "ftyp-compat-only",
        b"\x00\x00\x00\x18ftypzzzz\x00\x00\x00\x00zzzzmp41" + bytes(8),
        "application/octet-stream",
    ),
    ("ftyp-3gp", b"\x00\x00\x00\x14ftyp3gp4" + bytes(12), "video/3gpp"),
    ("ftyp-3g2", b"\x00\x00\x00\x14ftyp3g2a" + bytes(12), "video/3gpp2"),
    ("ftyp-m4a", b"\x00\x00\x00\x14ftypM4A " + bytes(12), "audio/x-m4a"),
    ("ftyp-mif1", b"\x00\x00\x00\x14ftypmif1" + bytes(12), "image/heif"),
    ("quicktime-moov", b"\x00\x00\x00\x18moov" + bytes(20), "video/quicktime"),
    ("zip-short", b"PK\x03\x04\x14\x00" + bytes(30), "application/octet-stream"),
    ("zip-empty", b"PK\x05\x06" + bytes(18), "application/zip"),
    (
        "epub",
        b"PK\x03\x04\x14\x00" + bytes(20) + b"\x08\x00\x00\x00mimetypeapplication/epub+zipPK",
        "application/epub+zip",
    ),
    (
        "odt",
        b"PK\x03\x04\x14\x00"
        + bytes(20)
        + b"\x08\x00\x00\x00mimetypeapplication/vnd.oasis.opendocument.textPK",
        "application/vnd.oasis.opendocument.text",
    ),
    ("gzip-any-method", b"\x1f\x8b\x00\x00", "application/gzip"),
    ("gzip-3-bytes", b"\x1f\x8b\x08", "application/octet-stream"),
    ("7z-6-bytes", b"7z\xbc\xaf\x27\x1c", "application/octet-stream"),
    ("rar-space-whatwg", b"Rar \x1a\x07\x00" + bytes(8), "application/octet-stream"),
    ("pdf-after-newline", b"\n%PDF-1.4\n", "application/pdf"),
    ("pdf-in-text-256", b"x" * 256 + b"%PDF-1.4\n", "application/pdf"),
    ("pdf-in-text-300", b"x" * 300 + b"%PDF-1.4\n", "text/plain"),
    ("postscript", b"%!PS-Adobe-3.0\n", "application/postscript"),
    ("webm-far-doctype", b"\x1a\x45\xdf\xa3" + bytes(60) + b"\x42\x82\x84webm", "video/webm"),
    ("matroska", b"\x1a\x45\xdf\xa3\xa3\x42\x82\x88matroska", "video/x-matroska"),
    ("ebml-no-doctype", b"\x1a\x45\xdf\xa3" + bytes(10), "application/octet-stream"),
    ("ogg-theora", b"OggS\x00\x02" + bytes(22) + b"\x80theora" + bytes(8), "video/ogg"),
    (
        "ogg-unknown",
        b"OggS\x00\x02" + bytes(22) + b"XXXXXXXX" + bytes(8),
        "application/octet-stream",
    ),
    ("mpeg-free-bitrate", b"\xff\xfb\x00\x64" + bytes(20), "application/octet-stream"),
    ("aac-adts", b"\xff\xf1\x50\x80" + bytes(20), "audio/x-hx-aac-adts"),
    ("utf16-bom-not-mpeg", "hello".encode("utf-16"), "text/plain"),
    ("utf16-no-bom", "hello".encode("utf-16-be"), "application/octet-stream"),
    ("utf32", "hello".encode("utf-32"), "text/plain"),
    ("latin1", "café crème\n".encode("latin-1"), "text/plain"),
    ("esc-is-text", b"a\x1b[0m b\n", "text/plain"),
    ("nul-is-binary", b"hello\x00world", "application/octet-stream"),
    ("html-doctype", b"<!DOCTYPE html><p>x", "text/html"),
    ("html-doctype-spaces", b"<!doctype \n html>", "text/html"),
    ("html-late-tag", b"some words then <TITLE>x</TITLE>", "text/html"),
    ("html-body-only", b"<body><p>hi</p></body>", "text/plain"),  # libmagic, not §7.1
    ("html-a-href", b"see <a\thref='x'>", "text/html"),
    ("xml-decl", b"<?xml version='1.0'?><r/>", "text/xml"),
    ("xml-decl-upper", b"<?XML version='1.0'?><r/>", "text/xml"),
    ("xml-leading-space", b"  <?xml version='1.0'?><r/>", "text/plain"),
    ("xml-bom", b"\xef\xbb\xbf<?xml version='1.0'?><r/>", "text/xml"),
    ("xml-wins-over-html", b"<?xml version='1.0'?><html><head></head></html>", "text/xml"),
    ("svg-bare", b"<svg width='1'/>", "image/svg+xml"),
    ("svg-doctype", b"<!DOCTYPE svg PUBLIC 'x' 'y'>\n<svg/>", "image/svg+xml"),
    ("svg-upper-in-xml", b"<?xml version='1.0'?><SVG/>", "text/xml"),
    ("json-object", b'{"a": [1, 2.5e3, -0, "x\\u00e9"]}', "application/json"),
    ("json-trailing-comma", b"[1, 2,]", "application/json"),  # is_json.c leniency
    ("json-scalar", b'"just a string"', "text/plain"),
    ("json-truncated", b'{"a": [1, 2', "text/plain"),
    ("json-bad-escape", b'{"a": "\\x"}', "text/plain"),
    ("json-depth-250", b"[" * 250 + b"1" + b"]" * 250, "application/json"),
    ("json-depth-251", b"[" * 251 + b"1" + b"]" * 251, "text/plain"),
    ("json-vt-space", b'\x0b{"a":1}', "text/plain"),
    ("ndjson", b'{"a":1}\n{"b":2}\n', "application/x-ndjson"),
    ("ndjson-mixed", b'{"a":1}\n[1]\n', "text/plain"),
    ("csv-three-lines", b"a,b\n1,2\n3,4\n", "text/csv"),
    ("csv-two-lines", b"a,b\n1,2\n", "text/plain"),
    ("csv-ragged", b"a,b\n1,2\n3,4,5\n", "text/plain"),
    ("csv-quoted", b'"a,b",c\n1,2\n3,4\n', "text/csv"),
    ("tar-ustar", b"", "application/x-tar"),  # body filled in below
]


def _tar_header() -> bytes:
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    return out.getvalue()[:SNIFF_LEN]


EDGE_CASES[-1] = ("tar-ustar", _tar_header(), "application/x-tar")


@pytest.mark.parametrize(("body", "expected"), [pytest.param(b, e, id=i) for i, b, e in EDGE_CASES])
def test_edge_cases(sniff_impl: Sniff, body: bytes, expected: str) -> None:
    assert sniff_impl(body) == expected


def test_accepts_buffers(sniff_impl: Sniff) -> None:
    body = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"
    assert sniff_impl(bytearray(body)) == "image/png"  # type: ignore[arg-type]
    assert sniff_impl(memoryview(body)) == "image/png"  # type: ignore[arg-type]


def test_every_prefix_of_the_corpus(sniff_impl: Sniff, corpus: list[Sample]) -> None:
    """Every cut of every sample (down to one byte) sniffs without error, as the twin does."""
    mismatches = []
    for s in corpus:
        for cut in range(len(s.head) + 1):
            body = s.head[:cut]
            got = sniff_impl(body)
            assert isinstance(got, str) and "/" in got
            if got != _sniff_py.sniff(body):
                mismatches.append((s.name, cut))
    assert mismatches == []


def _compiled_sniff() -> Sniff:
    mod = _compiled()
    if mod is None:
        pytest.skip("compiled pazari.mime._sniff not built")
    return mod.sniff  # type: ignore[no-any-return]


_SIGNATURES = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
    b"GIF8",
    b"RIFF",
    b"BM",
    b"\x00\x00\x01\x00",
    b"II*\x00",
    b"\x00\x00\x00\x18ftyp",
    b"8BPS\x00\x01",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07\x00",
    b"%PDF-",
    b"\x1a\x45\xdf\xa3",
    b"OggS\x00",
    b"ID3\x03",
    b"\xff\xfb",
    b"<?xml ",
    b"<svg",
    b"<!doctype html",
    b'{"a":',
    b"[",
    b"a,b\n",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"<html ",
]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=SNIFF_LEN))
def test_differential_random_bytes(data: bytes) -> None:
    assert _compiled_sniff()(data) == _sniff_py.sniff(data)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(_SIGNATURES),
    st.lists(
        st.sampled_from(
            [*_SIGNATURES, b" ", b"\n", b",", b"]", b"}", b'"', b"\x00", b"B\x82\x84webm"]
        ),
        max_size=12,
    ),
    st.binary(max_size=64),
)
def test_differential_hostile(head: bytes, parts: list[bytes], tail: bytes) -> None:
    data = (head + b"".join(parts) + tail)[:SNIFF_LEN]
    assert _compiled_sniff()(data) == _sniff_py.sniff(data)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_differential_mutated_corpus(corpus: list[Sample], data: st.DataObject) -> None:
    sample = data.draw(st.sampled_from(corpus))
    body = bytearray(sample.head[: data.draw(st.integers(0, len(sample.head)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if body:
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    assert _compiled_sniff()(bytes(body)) == _sniff_py.sniff(bytes(body))


def test_package_reexports() -> None:
    mod = importlib.import_module("pazari.mime")
    for name in ("sniff", "match", "parse_mime_patterns", "check_any", "BadPattern", "MimeSpec"):
        assert hasattr(mod, name), name
