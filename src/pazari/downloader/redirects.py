"""Redirect policy, the same for downloads and callbacks and whatever the transport (issue
11, spec §3 step 3): where the next hop goes, which credentials travel with it, which hops
are refused.

- A ``Location`` that is not valid UTF-8, names another scheme than http(s), or does not
  parse (a broken IPv6 literal, a bad port) is refused: a poison header fails the job with
  a reason instead of raising somewhere nobody catches it.
- ``Authorization``, ``Cookie`` and ``Proxy-Authorization`` (and Go's ``Cookie2`` and
  ``Www-Authenticate``) are dropped once the scheme, host or port changes, as Go's client
  drops them on a redirect to another host (net/http ``shouldCopyHeaderOnRedirect``): the
  job's credentials are for the host the job named.
- https -> http is refused unless ``allow_insecure_redirects``: the body and any remaining
  headers would travel in clear text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

#: Status codes that carry a Location to follow (RFC 9110 §15.4).
REDIRECTS = frozenset((301, 302, 303, 307, 308))
#: Status codes after which a POST becomes a GET without a body (Go's client.Post, RFC 9110
#: §15.4.2-4); 307 and 308 repeat the method and the body.
TO_GET = frozenset((301, 302, 303))
#: Headers that stay with the origin they were meant for (lower case).
SENSITIVE = frozenset(("authorization", "cookie", "cookie2", "proxy-authorization",
                       "www-authenticate"))


class RedirectRefused(ValueError):
    """A hop the policy refuses; ``str()`` says why. Not worth retrying: the same server
    would answer the same way."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


def origin(url: str) -> Origin:
    """(scheme, host, port) of an absolute http(s) URL, the port defaulted (RFC 6454 §4);
    ValueError when it does not parse."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port
    if port is None:
        port = 443 if scheme == "https" else 80
    return Origin(scheme, (parts.hostname or "").lower(), port)


def next_hop(current: str, location: str, *, allow_insecure: bool) -> str:
    """The absolute URL the ``Location`` of a response to ``current`` points at."""
    try:
        location.encode("utf-8")
    except UnicodeEncodeError:
        # The transport hands undecodable bytes over as surrogates (surrogateescape).
        raise RedirectRefused(
            f"invalid Location header {location.encode('utf-8', 'surrogateescape')!r}: "
            "not valid UTF-8") from None
    if any(c < " " or c == "\x7f" for c in location):
        raise RedirectRefused(f"invalid Location header {location!r}: control character")
    try:
        target = urljoin(current, location.strip())
        hop = origin(target)
    except ValueError as exc:
        raise RedirectRefused(f"invalid Location header {location!r}: {exc}") from None
    if hop.scheme not in ("http", "https"):
        raise RedirectRefused(f"redirect to unsupported protocol scheme \"{hop.scheme}\" "
                              f"({target!r})")
    if not hop.host:
        raise RedirectRefused(f"invalid Location header {location!r}: no host")
    if hop.port == 0:
        raise RedirectRefused(f"invalid Location header {location!r}: port 0")
    if hop.scheme == "http" and origin(current).scheme == "https" and not allow_insecure:
        raise RedirectRefused(f"refusing redirect from https to http ({target!r}): "
                              "allow_insecure_redirects is off")
    return target


def headers_for_hop(headers: Mapping[str, str], first: str, hop: str) -> Mapping[str, str]:
    """``headers`` for a request to ``hop`` when the job named ``first``: the credentials
    are dropped once scheme, host or port differ."""
    if origin(first) == origin(hop):
        return headers
    return {k: v for k, v in headers.items() if k.lower() not in SENSITIVE}
