"""RESP (Redis protocol) request parser and reply writer for rafka.

Picks the compiled ``pazari.resp._parser`` (or the pure twin ``_parser_py`` when
``PAZARI_NO_EXTENSIONS=1``); daemons import this package, never a twin directly.

Server loop, one crossing per socket read (rafka.md §1.1: on a parse error write
``-<text>\\r\\n`` and close)::

    reader.feed(data)
    try:
        while cmds := reader.gets_all():   # a 2nd call raises an error found after cmds
            for cmd in cmds:
                handle(cmd)                  # replies go to one Writer
    except ProtocolError as exc:
        writer.error(str(exc).encode())
        ...flush writer.take(), close
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pazari._ext import select
from pazari.resp.errors import ERROR_TEXTS, ProtocolError

if TYPE_CHECKING:
    from pazari.resp._parser import Reader, Writer, encode_command
else:
    _impl = select("pazari.resp._parser", "pazari.resp._parser_py")
    Reader = _impl.Reader
    Writer = _impl.Writer
    encode_command = _impl.encode_command

__all__ = ["ERROR_TEXTS", "ProtocolError", "Reader", "Writer", "encode_command"]
