"""A real corpus for the sniffer: files written by Pillow, zipfile, gzip, wave and by hand.

``build_corpus(dir)`` writes every sample to ``dir`` and returns its first 1 KiB (what the
downloader sniffs) with the type we expect. Formats Pillow cannot write (HEIC, PSD, 7z, RAR,
MP4, WebM, Ogg, MP3) get minimal but valid headers built here.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import wave
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SNIFF_LEN = 1024


@dataclass(frozen=True)
class Sample:
    name: str
    expected: str
    head: bytes  # the first 1 KiB of the file
    path: Path


def _pillow(fmt: str, size: tuple[int, int] = (64, 48), **kw: object) -> bytes:
    from PIL import Image

    img = Image.new("RGB", size)
    # A gradient, so compressed formats produce realistic, non-trivial bodies.
    img.putdata(
        [(x * 4 % 256, y * 5 % 256, (x + y) % 256) for y in range(size[1]) for x in range(size[0])]
    )
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _ftyp(major: bytes, *compat: bytes) -> bytes:
    return _box(b"ftyp", major + b"\x00\x00\x02\x00" + b"".join(compat))


def _heic() -> bytes:
    return _ftyp(b"heic", b"mif1", b"heic") + _box(
        b"meta", bytes(4) + _box(b"hdlr", bytes(8) + b"pict" + bytes(13))
    )


def _mp4(major: bytes, *compat: bytes) -> bytes:
    return (
        _ftyp(major, *compat) + _box(b"moov", _box(b"mvhd", bytes(100))) + _box(b"mdat", bytes(64))
    )


def _psd() -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 48, 64, 8, 3)
    return header + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", 0) + bytes(200)


def _ebml(doctype: bytes) -> bytes:
    body = b"\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08"
    body += (
        b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype + b"\x42\x87\x81\x04\x42\x85\x81\x02"
    )
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body + b"\x18\x53\x80\x67" + bytes(64)


def _ogg_vorbis() -> bytes:
    ident = b"\x01vorbis" + struct.pack("<IBIiii", 0, 2, 44100, 0, 128000, 0) + b"\xb8\x01"
    page = b"OggS\x00\x02" + bytes(8) + struct.pack("<II", 0x1234, 0) + bytes(4) + b"\x01"
    return page + bytes([len(ident)]) + ident + b"OggS\x00\x00" + bytes(200)


def _ogg_opus() -> bytes:
    head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    page = b"OggS\x00\x02" + bytes(8) + struct.pack("<II", 7, 0) + bytes(4) + b"\x01"
    return page + bytes([len(head)]) + head + bytes(100)


def _mp3_frames(count: int = 4) -> bytes:
    frame = b"\xff\xfb\x90\x64" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz
    return frame * count


def _id3(tag_size: int) -> bytes:
    syncsafe = bytes([(tag_size >> s) & 0x7F for s in (21, 14, 7, 0)])
    frame = b"TIT2" + struct.pack(">I", 6) + b"\x00\x00\x03hello"
    tag = frame + bytes(tag_size - len(frame))
    return b"ID3\x03\x00\x00" + syncsafe + tag + _mp3_frames()


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(4000))
    return out.getvalue()


def _zip(compression: int, *members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return out.getvalue()


def _pdf() -> bytes:
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    body = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    body += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return body + b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref


_HTML = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Product</title>
<link rel="stylesheet" href="/s.css"></head>
<body><h1>Shop</h1><p>Hello</p></body></html>
"""
_SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>
"""
_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>feed</title><item><title>a</title></item></channel></rss>
"""


def _json() -> bytes:
    items = ", ".join(f'{{"id": {i}, "name": "item {i}", "price": {i * 1.5}}}' for i in range(5))
    return f'{{"items": [{items}], "total": 5, "ok": true, "next": null}}\n'.encode()


def _text() -> bytes:
    return b"Plain text notes.\nLine two has words; and punctuation!\n" * 10


def _random(seed: int) -> bytes:
    return random.Random(seed).randbytes(4096)


# name, expected MIME, file builder. Expected names are libmagic's (file 5.44).
SPECS: list[tuple[str, str, Callable[[], bytes]]] = [
    ("photo.jpg", "image/jpeg", lambda: _pillow("JPEG", quality=85)),
    ("photo-progressive.jpg", "image/jpeg", lambda: _pillow("JPEG", progressive=True)),
    ("image.png", "image/png", lambda: _pillow("PNG")),
    ("image.gif", "image/gif", lambda: _pillow("GIF")),
    ("image.webp", "image/webp", lambda: _pillow("WEBP")),
    ("image-lossless.webp", "image/webp", lambda: _pillow("WEBP", lossless=True)),
    ("image.bmp", "image/bmp", lambda: _pillow("BMP")),
    ("favicon.ico", "image/vnd.microsoft.icon", lambda: _pillow("ICO", sizes=[(32, 32)])),
    ("image.tiff", "image/tiff", lambda: _pillow("TIFF")),
    ("image.avif", "image/avif", lambda: _pillow("AVIF")),
    ("image.heic", "image/heic", _heic),
    ("layers.psd", "image/vnd.adobe.photoshop", _psd),
    ("logo.svg", "image/svg+xml", lambda: _SVG),
    (
        "archive.zip",
        "application/zip",
        lambda: _zip(zipfile.ZIP_DEFLATED, ("a.txt", _text()), ("b.bin", _random(1))),
    ),
    ("stored.zip", "application/zip", lambda: _zip(zipfile.ZIP_STORED, ("readme.txt", _text()))),
    ("data.gz", "application/gzip", lambda: gzip.compress(_text())),
    (
        "archive.7z",
        "application/x-7z-compressed",
        lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + _random(2)[:200],
    ),
    (
        "archive4.rar",
        "application/x-rar",
        lambda: b"Rar!\x1a\x07\x00\xcf\x90\x73\x00\x00\x0d" + bytes(100),
    ),
    (
        "archive5.rar",
        "application/x-rar",
        lambda: b"Rar!\x1a\x07\x01\x00\x33\x92\xb5\xe5\x0a\x01" + bytes(100),
    ),
    ("doc.pdf", "application/pdf", _pdf),
    ("video.mp4", "video/mp4", lambda: _mp4(b"isom", b"isom", b"iso2", b"avc1", b"mp41")),
    ("video-mp42.mp4", "video/mp4", lambda: _mp4(b"mp42", b"mp42", b"isom")),
    ("video.webm", "video/webm", lambda: _ebml(b"webm")),
    ("audio.ogg", "audio/ogg", _ogg_vorbis),
    ("audio.opus", "audio/ogg", _ogg_opus),
    ("audio.mp3", "audio/mpeg", _mp3_frames),
    ("audio-id3.mp3", "audio/mpeg", lambda: _id3(64)),
    ("audio.wav", "audio/x-wav", _wav),
    ("page.html", "text/html", lambda: _HTML),
    ("fragment.html", "text/html", lambda: b"<table class=x><tr><td>1</td></tr></table>\n"),
    ("feed.xml", "text/xml", lambda: _XML),
    ("api.json", "application/json", _json),
    ("list.json", "application/json", lambda: b'[1, 2, 3, {"a": [true, false]}]\n'),
    ("notes.txt", "text/plain", _text),
    (
        "table.csv",
        "text/csv",
        lambda: b'id,name,price\n1,apple,0.5\n2,pear,0.7\n3,"fig, dried",1.2\n',
    ),
    ("utf8.txt", "text/plain", lambda: "Καλημέρα κόσμε: ünïcödé text\n".encode() * 20),
    ("random1.bin", "application/octet-stream", lambda: _random(11)),
    ("random2.bin", "application/octet-stream", lambda: _random(12)),
    ("zeros.bin", "application/octet-stream", lambda: bytes(2048)),
    ("empty", "application/x-empty", lambda: b""),
]

# Samples where we deliberately answer differently from libmagic (see test_agreement.py).
DISAGREEING_SPECS: list[tuple[str, str, Callable[[], bytes]]] = [
    # A 4 KiB ID3 tag (cover art): libmagic cannot see the frame behind it in 1 KiB.
    ("audio-big-id3.mp3", "audio/mpeg", lambda: _id3(4096)),
]


def build_corpus(
    root: Path, specs: list[tuple[str, str, Callable[[], bytes]]] | None = None
) -> list[Sample]:
    samples = []
    for name, expected, make in specs if specs is not None else SPECS + DISAGREEING_SPECS:
        path = root / name
        path.write_bytes(make())
        with path.open("rb") as f:
            head = f.read(SNIFF_LEN)
        samples.append(Sample(name, expected, head, path))
    return samples
