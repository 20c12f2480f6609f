"""rafka: a Kafka proxy that speaks RESP, wire-compatible with skroutz/rafka 0.6.2.

One module per responsibility, as in the Go original: ``server`` (listener, client registry,
shutdown sequence), ``connection`` (one protocol object per TCP connection), ``commands``
(the command table), ``consumer`` and ``producer`` (confluent-kafka), ``config`` and
``stats``.
"""

#: The version of the original this server is wire-compatible with (spec §2.1).
RAFKA_COMPAT_VERSION = "0.6.2"
