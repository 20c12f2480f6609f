"""mistry: a build server with cached, coalesced, incremental container builds (issue 5).

``mistryd`` (``__main__``) serves the HTTP API of the original skroutz/mistry; ``mistry``
(``client``) is its command-line client. One module per responsibility: ``names`` (input
validation), ``jobid`` (content-addressed ids), ``store`` (on-disk layout, BuildInfo, index),
``filesystem`` (plain/btrfs adapters), ``engine`` (Docker Engine API), ``worker`` (pool,
coalescing, the build itself), ``server`` (HTTP), ``janitor`` (retention), ``client``.
"""

MISTRY_COMPAT_VERSION = "0.1.0"
