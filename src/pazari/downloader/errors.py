"""The processor's download error, formatted as the original's callback ``error`` text
(spec §3 perform): ``Error while <phase>, <err>, retriable: <bool>, internal: <bool>``."""

from __future__ import annotations


class DownloadError(Exception):
    def __init__(self, phase: str, message: str, *, retriable: bool, internal: bool = False,
                 stat: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.phase = phase
        self.message = message
        self.retriable = retriable
        self.internal = internal
        self.stat = stat  # the stats key to count, e.g. "download.response.tls"
        # Seconds the server asked us to wait (Retry-After on 429/503, RFC 9110 §10.2.3).
        self.retry_after = retry_after

    def __str__(self) -> str:
        return (f"Error while {self.phase}, {self.message}, "
                f"retriable: {'true' if self.retriable else 'false'}, "
                f"internal: {'true' if self.internal else 'false'}")
