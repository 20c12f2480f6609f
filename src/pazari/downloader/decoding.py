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
from collections import deque
from typing import Protocol

import brotli  # type: ignore[import-untyped]

from pazari.downloader.transport import ResponseError, Sink

ACCEPT_ENCODING = "gzip, deflate, br"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
DECODE_STEP = 256 * 1024  # most decoded bytes handed to the sink per decompress call


class Decoder(Protocol):
    """``push`` takes encoded bytes; ``drain(budget)`` hands decoded bytes to the sink, about
    ``budget`` of them at most (one DECODE_STEP beyond), and says whether input is left;
    ``feed`` is both, unbounded (for a transport that decodes as it reads); ``finish`` at
    the end of the body."""

    @property
    def pending(self) -> int: ...  # encoded bytes pushed and not decoded yet

    def push(self, data: bytes) -> None: ...

    def drain(self, budget: int) -> bool: ...

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class _Queued:
    """The input side both decoders share: bodies queued as they arrive, decoded by
    ``drain`` in bounded slices (``feed`` decodes at once)."""

    __slots__ = ("_input", "pending")

    def __init__(self) -> None:
        self._input: deque[bytes] = deque()
        self.pending = 0

    def push(self, data: bytes) -> None:
        if data:
            self._input.append(data)
            self.pending += len(data)

    def feed(self, data: bytes) -> None:
        self.push(data)
        self.drain(1 << 62)

    def drain(self, budget: int) -> bool:
        raise NotImplementedError


class ZlibDecoder(_Queued):
    __slots__ = ("_d", "_fed", "_first", "_multi", "_raw_fallback", "_sink",
                 "pending")

    def __init__(self, wbits: int, sink: Sink, raw_fallback: bool) -> None:
        self._d = zlib.decompressobj(wbits)
        # gzip may be several members back to back (RFC 1952 §2.2); Go's reader reads
        # them all, zlib stops after the first.
        self._multi = wbits == _GZIP_WBITS
        self._sink = sink
        self._raw_fallback = raw_fallback
        self._first = b""  # the body's first byte while the format is not known yet
        self._fed = False
        super().__init__()

    def drain(self, budget: int) -> bool:
        produced = 0
        try:
            while produced < budget:
                out = self._next()
                if out is None:
                    return False
                if out:
                    self._sink(out)
                    produced += len(out)
        except zlib.error as exc:
            raise ResponseError(f"invalid compressed body: {exc}") from None
        return self._d.unconsumed_tail != b"" or bool(self._input)

    def _next(self) -> bytes | None:
        """One decompress call (at most DECODE_STEP out), or None when input ran out."""
        d = self._d
        # eof first: a member that ends while output was capped leaves its input's rest in
        # both unconsumed_tail and unused_data, and decompressing the tail again after eof
        # returns nothing forever (a loop a bomb of 1 MiB members found).
        if d.eof:
            rest = d.unused_data
            if not self._multi:
                self._input.clear()  # after the end of a deflate stream: ignored
                self.pending = 0
                return None
            if not rest:
                if not self._input:
                    return None
                rest = self._take()
            self._d = zlib.decompressobj(_GZIP_WBITS)
            return self._d.decompress(rest, DECODE_STEP)
        if d.unconsumed_tail:
            return d.decompress(d.unconsumed_tail, DECODE_STEP)
        if not self._input:
            return None
        data = self._take()
        if self._raw_fallback:
            # "deflate" is the zlib format (RFC 9110 §8.4.1.2), but servers send raw
            # DEFLATE too; browsers (and aiohttp) accept both. Two bytes tell them apart,
            # and a chunk may carry just one.
            data = self._first + data
            if len(data) < 2:
                self._first = data
                return b""
            self._raw_fallback = False
            self._first = b""
            if not _zlib_header(data[0], data[1]):
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        self._fed = True
        return self._d.decompress(data, DECODE_STEP)

    def _take(self) -> bytes:
        data = self._input.popleft()
        self.pending -= len(data)
        return data

    def finish(self) -> None:
        self.drain(1 << 62)
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


class BrotliDecoder(_Queued):
    """``br`` (RFC 7932), in output steps of DECODE_STEP."""

    __slots__ = ("_d", "_fed", "_sink")

    def __init__(self, sink: Sink) -> None:
        self._d = brotli.Decompressor()
        self._sink = sink
        self._fed = False
        super().__init__()

    def drain(self, budget: int) -> bool:
        produced = 0
        d = self._d
        try:
            while produced < budget:
                if d.can_accept_more_data():
                    if not self._input or d.is_finished():
                        return False
                    data = self._input.popleft()
                    self.pending -= len(data)
                    self._fed = True
                    out = d.process(data, output_buffer_limit=DECODE_STEP)
                else:
                    out = d.process(b"", output_buffer_limit=DECODE_STEP)
                if out:
                    self._sink(out)
                    produced += len(out)
        except brotli.error as exc:
            raise ResponseError(f"invalid compressed body: {exc}") from None
        return bool(self._input) or not d.can_accept_more_data()

    def finish(self) -> None:
        self.drain(1 << 62)
        if self._fed and not self._d.is_finished():
            raise ResponseError("invalid compressed body: unexpected EOF")
