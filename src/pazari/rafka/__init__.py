"""rafka: a Kafka proxy that speaks RESP, wire-compatible with skroutz/rafka 0.6.2.

One module per responsibility, as in the Go original: ``server`` (listener, client registry,
shutdown sequence), ``connection`` (one protocol object per TCP connection), ``commands``
(the command table), ``consumer`` and ``producer`` (confluent-kafka), ``config`` and
``stats``.
"""

from pazari._ext import select

#: The compiled RPUSHX hot path (ext/rafka), or its pure twin with PAZARI_NO_EXTENSIONS=1.
_impl = select("pazari.rafka._fastpath", "pazari.rafka._fastpath_py")
produce_run = _impl.produce_run

#: The version of the original this server is wire-compatible with (spec §2.1).
RAFKA_COMPAT_VERSION = "0.6.2"
