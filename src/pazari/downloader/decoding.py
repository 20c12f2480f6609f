"""Content decoding of response bodies (RFC 9110 §8.4), shared by the transports, in
bounded steps: at most DECODE_STEP decoded bytes per decompress call reach the sink, so a
bomb is cut by the sink's size limit after at most one step beyond it, and never held in
memory whole.

Why not libcurl's decoders: libcurl 8.23 refuses a gzip body of several members
("Multi-member gzip response not supported"), which RFC 1952 §2.2 allows and Go's reader
decodes; the original's downloads of such bodies succeeded.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli  # type: ignore[import-untyped]

from pazari.downloader.transport import ResponseError, Sink

ACCEPT_ENCODING = "gzip, deflate, br"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
DECODE_STEP = 256 * 1024  # most decoded bytes handed to the sink per decompress call


class Decoder(Protocol):
    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class ZlibDecoder:
    __slots__ = ("_d", "_fed", "_first", "_multi", "_raw_fallback", "_sink")

    def __init__(self, wbits: int, sink: Sink, raw_fallback: bool) -> None:
        self._d = zlib.decompressobj(wbits)
        # gzip may be several members back to back (RFC 1952 §2.2); Go's reader reads
        # them all, zlib stops after the first.
        self._multi = wbits == _GZIP_WBITS
        self._sink = sink
        self._raw_fallback = raw_fallback
        self._first = b""  # the body's first byte while the format is not known yet
        self._fed = False

    def feed(self, data: bytes) -> None:
        try:
            if self._raw_fallback:
                # "deflate" is the zlib format (RFC 9110 §8.4.1.2), but servers send raw
                # DEFLATE too; browsers (and aiohttp) accept both. Two bytes tell them
                # apart, and a chunk may carry just one.
                data = self._first + data
                if len(data) < 2:
                    self._first = data
                    return
                self._raw_fallback = False
                self._first = b""
                if not _zlib_header(data[0], data[1]):
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            self._fed = self._fed or bool(data)
            out = self._d.decompress(data, DECODE_STEP)
            while True:
                if out:
                    self._sink(out)
                tail = self._d.unconsumed_tail
                if tail:
                    out = self._d.decompress(tail, DECODE_STEP)
                elif self._multi and self._d.eof and self._d.unused_data:
                    rest = self._d.unused_data
                    self._d = zlib.decompressobj(_GZIP_WBITS)
                    out = self._d.decompress(rest, DECODE_STEP)
                else:
                    break
        except zlib.error as exc:
            raise ResponseError(f"invalid compressed body: {exc}") from None

    def finish(self) -> None:
        if self._first:  # a one-byte body: too short for either format (fails below)
            first, self._first, self._raw_fallback = self._first, b"", False
            self.feed(first)
        try:
            rest = self._d.flush()
        except zlib.error as exc:
            raise ResponseError(f"invalid compressed body: {exc}") from None
        if rest:
            self._sink(rest)
        if self._fed and not self._d.eof:
            # Go's gzip and flate readers report a stream cut short as io.ErrUnexpectedEOF;
            # zlib's flush() just returns what it has.
            raise ResponseError("invalid compressed body: unexpected EOF")


def _zlib_header(cmf: int, flg: int) -> bool:
    """RFC 1950 §2.2: method 8 (deflate) and the header check bits."""
    return cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0


def decoder(encoding: str, sink: Sink) -> Decoder | None:
    if encoding in ("gzip", "x-gzip"):
        return ZlibDecoder(_GZIP_WBITS, sink, raw_fallback=False)
    if encoding == "deflate":
        return ZlibDecoder(zlib.MAX_WBITS, sink, raw_fallback=True)
    if encoding == "br":
        return BrotliDecoder(sink)
    return None  # identity, or one we did not ask for: the bytes as sent


class BrotliDecoder:
    """``br`` (RFC 7932), in output steps of DECODE_STEP."""

    __slots__ = ("_d", "_fed", "_sink")

    def __init__(self, sink: Sink) -> None:
        self._d = brotli.Decompressor()
        self._sink = sink
        self._fed = False

    def feed(self, data: bytes) -> None:
        self._fed = self._fed or bool(data)
        try:
            out = self._d.process(data, output_buffer_limit=DECODE_STEP)
            while True:
                if out:
                    self._sink(out)
                if self._d.can_accept_more_data() or self._d.is_finished():
                    break
                out = self._d.process(b"", output_buffer_limit=DECODE_STEP)
        except brotli.error as exc:
            raise ResponseError(f"invalid compressed body: {exc}") from None

    def finish(self) -> None:
        if self._fed and not self._d.is_finished():
            raise ResponseError("invalid compressed body: unexpected EOF")
