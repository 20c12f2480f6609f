"""HMAC-SHA256 callback signatures (beyond the original; issue 11).

A secret is chosen for a destination by exact origin: the key ``https://partner.example``
matches scheme, host and port exactly (a default port spelled or not), never a longer host
(``partner.example.evil.net``) nor userinfo (``partner.example@evil.net``). A key with a path
(``https://partner.example/hooks/``) also requires the destination's path to be that path or
below it at a ``/`` boundary (``/hooks/x`` yes, ``/hooksx`` no). The longest matching key
wins. A key that is not an http(s) URL (a Kafka topic) matches that destination exactly.

The signature covers a timestamp: ``HMAC(secret, "<unix seconds>." + body)``, sent as
``sha256=<hex>`` in the signature header beside the timestamp header, so a receiver can
refuse stale or replayed callbacks (see the README for a verifier).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from pazari.downloader.redirects import Origin, origin


class _Key(NamedTuple):
    origin: Origin
    prefix: str  # "" for every path, else ends with "/" or is an exact path
    secret: str


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _is_url(key: str) -> bool:
    return key.lower().startswith(("http://", "https://"))


class Secrets:
    """The configured secrets (``notifier.signing_secrets``), parsed once."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.exact = {k: v for k, v in secrets.items() if not _is_url(k)}
        self.keys: list[_Key] = []
        for key, secret in secrets.items():
            if _is_url(key):
                parts = urlsplit(key)
                self.keys.append(_Key(origin(key), parts.path.rstrip("/"), secret))
        # Longest path first: the most specific key wins.
        self.keys.sort(key=lambda k: len(k.prefix), reverse=True)

    def for_destination(self, dst: str) -> str | None:
        if not _is_url(dst):
            return self.exact.get(dst)
        try:
            dst_origin = origin(dst)
            path = urlsplit(dst).path or "/"
        except ValueError:
            return None
        for key in self.keys:
            if key.origin != dst_origin:
                continue
            if not key.prefix or path == key.prefix or path.startswith(key.prefix + "/"):
                return key.secret
        return None


def validate_keys(secrets: Mapping[str, str]) -> str | None:
    """The first unusable key (an http(s) URL that does not parse, carries userinfo, a
    query or a fragment), or None."""
    for key in secrets:
        if not _is_url(key):
            continue
        try:
            parts = urlsplit(key)
            origin(key)
        except ValueError as exc:
            return f"{key!r}: {exc}"
        if not parts.hostname:
            return f"{key!r}: no host"
        if "@" in parts.netloc or parts.query or parts.fragment:
            return f"{key!r}: an origin and an optional path only (no userinfo, query or " \
                   "fragment)"
    return None
