"""A Python client for the downloader's HTTP API (spec §1), the equivalent of skroutz/ferto,
and a verifier for the notifier's signed callbacks.

``Client`` blocks (urllib); ``AsyncClient`` has the same methods as coroutines (aiohttp)::

    from pazari.downloader.client import Client, verify_callback

    job_id = Client("http://127.0.0.1:8000", aggr_limit=4).download(
        "https://example.com/a.jpg", aggr_id="shop-1", callback_url="https://me/cb")
    # in the callback receiver:
    if not verify_callback(body, headers, secret):
        ...  # answer 401 and drop it
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from pazari.runtime.logs import get_logger

log = get_logger("downloader.client")

#: The notifier's default header names (``notifier.signature_header`` and
#: ``notifier.timestamp_header`` in its config).
SIGNATURE_HEADER = "X-Downloader-Signature"
TIMESTAMP_HEADER = "X-Downloader-Timestamp"


class DownloaderError(Exception):
    """Base of the errors this client raises."""


class ResponseError(DownloaderError):
    """The API answered 4xx/5xx; ``message`` is its error text (spec §1: ``http.Error``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"downloader API answered {status}: {message}")
        self.status = status
        self.message = message


class ConnectionError(DownloaderError):  # ferto's Ferto::ConnectionError
    """The API could not be reached (refused, reset, timed out)."""


def download_body(
    url: str, aggr_id: str, aggr_limit: int, *,
    callback_url: str | None = None, callback_type: str | None = None,
    callback_dst: str | None = None, callback_error_type: str | None = None,
    callback_error_dst: str | None = None, aggr_proxy: str | None = None,
    mime_type: str | None = None, extract_image_size: bool | None = None,
    request_headers: Mapping[str, str] | None = None, user_agent: str | None = None,
    s3_bucket: str | None = None, s3_region: str | None = None,
    download_timeout: int | None = None, max_retries: int | None = None,
    extra: str | Mapping[str, Any] | None = None, subpath: str | None = None,
) -> dict[str, Any]:
    """The POST /download JSON, built as ferto's ``build_body`` does."""
    if (s3_bucket is None) != (s3_region is None):
        raise ValueError("s3_bucket and s3_region go together")
    body: dict[str, Any] = {"aggr_id": aggr_id, "aggr_limit": aggr_limit, "url": url}
    optional = {
        "callback_url": callback_url, "callback_type": callback_type,
        "callback_dst": callback_dst, "callback_error_type": callback_error_type,
        "callback_error_dst": callback_error_dst, "aggr_proxy": aggr_proxy,
        "mime_type": mime_type, "extract_image_size": extract_image_size,
        "s3_bucket": s3_bucket, "s3_region": s3_region, "download_timeout": download_timeout,
        "max_retries": max_retries, "subpath": subpath,
    }  # fmt: skip
    body.update({k: v for k, v in optional.items() if v is not None})
    if extra is not None:
        # The API takes extra as an opaque string and ignores anything else (spec §1).
        body["extra"] = extra if isinstance(extra, str) else json.dumps(extra)
    headers = dict(request_headers or {})
    # The API ignores user_agent since 0.1.1; like ferto (and curl), a User-Agent in the
    # request headers wins, else user_agent becomes one.
    if user_agent is not None and not any(k.lower() == "user-agent" for k in headers):
        headers["User-Agent"] = user_agent
    if headers:
        body["request_headers"] = headers
    return body


def _job_id(status: int, text: str) -> str:
    if status >= 400:
        raise ResponseError(status, text.rstrip("\n"))
    try:
        job_id = json.loads(text)["id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DownloaderError(f"unexpected answer {status}: {text[:200]!r}") from exc
    if not isinstance(job_id, str) or not job_id:
        raise DownloaderError(f"unexpected job id in {text[:200]!r}")
    return job_id


def _check_retry(status: int, text: str) -> None:
    if status >= 400:
        raise ResponseError(status, text.rstrip("\n"))


class Client:
    """The downloader API, blocking. ``timeout`` bounds the connect and each read."""

    def __init__(self, url: str = "http://localhost:8000", aggr_limit: int = 4,
                 timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.aggr_limit = aggr_limit
        self.timeout = timeout

    def _post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, data=body, method="POST",
                                         headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"{self.url}{path}: {exc}") from exc

    def download(self, url: str, *, aggr_id: str, aggr_limit: int | None = None,
                 **fields: Any) -> str:
        """Queue a download; returns the job id (``ResponseError`` on 4xx/5xx).

        ``fields`` are those of :func:`download_body` (callback_url, mime_type, ...).
        """
        limit = self.aggr_limit if aggr_limit is None else aggr_limit
        body = download_body(url, aggr_id, limit, **fields)
        status, text = self._post("/download", json.dumps(body).encode(), _headers(aggr_id))
        return _job_id(status, text)

    def retry(self, job_id: str) -> None:
        """Re-queue the failed callback of a job (POST /retry/<id>, 204)."""
        _check_retry(*self._post(f"/retry/{quote(job_id, safe='')}", b"", {}))

    def close(self) -> None:
        """Nothing to release (one connection per request); for symmetry with AsyncClient."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The downloader API on aiohttp, with one session (and its connection pool)."""

    def __init__(self, url: str = "http://localhost:8000", aggr_limit: int = 4,
                 timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.aggr_limit = aggr_limit
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def _post(self, path: str, body: bytes, headers: Mapping[str, str],
                    ) -> tuple[int, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.url + path, data=body,
                                          headers=dict(headers)) as resp:
                return resp.status, await resp.text("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ConnectionError(f"{self.url}{path}: {exc!r}") from exc

    async def download(self, url: str, *, aggr_id: str, aggr_limit: int | None = None,
                       **fields: Any) -> str:
        """Queue a download; returns the job id (``ResponseError`` on 4xx/5xx)."""
        limit = self.aggr_limit if aggr_limit is None else aggr_limit
        body = download_body(url, aggr_id, limit, **fields)
        status, text = await self._post("/download", json.dumps(body).encode(),
                                        _headers(aggr_id))
        return _job_id(status, text)

    async def retry(self, job_id: str) -> None:
        """Re-queue the failed callback of a job (POST /retry/<id>, 204)."""
        _check_retry(*await self._post(f"/retry/{quote(job_id, safe='')}", b"", {}))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def _headers(aggr_id: str) -> dict[str, str]:
    # ferto sends X-Aggr so a balancer in front of several APIs can route by aggregation.
    return {"Content-Type": "application/json", "X-Aggr": aggr_id}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def callback_signature(secret: str, timestamp: int | None, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256>`` of ``"<timestamp>." + body``, as the notifier signs
    (``pazari.downloader.signing``); without a timestamp, of the body alone (the notifier
    before the timestamp was signed)."""
    message = body if timestamp is None else str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_callback(
    body: bytes, headers: Mapping[str, str], secret: str | Iterable[str],
    max_age: float = 300, *, now: float | None = None,
    signature_header: str = SIGNATURE_HEADER, timestamp_header: str = TIMESTAMP_HEADER,
    require_timestamp: bool = True,
) -> bool:
    """True if the callback carries a valid signature made with ``secret`` (or one of
    several, while rotating) no more than ``max_age`` seconds from ``now``, either way.

    Check the raw body bytes before parsing them. A callback without the timestamp header
    is refused unless ``require_timestamp=False`` (a notifier that signs the body only);
    accepting those lets an old signed callback be replayed.
    """
    given = _header(headers, signature_header)
    if given is None or not given.startswith("sha256="):
        log.debug("callback refused: no %s", signature_header)
        return False
    raw_ts = _header(headers, timestamp_header)
    timestamp: int | None = None
    if raw_ts is not None:
        if not (raw_ts.isascii() and raw_ts.isdigit() and len(raw_ts) <= 12):
            log.debug("callback refused: bad %s %r", timestamp_header, raw_ts[:40])
            return False
        timestamp = int(raw_ts)
        age = (time.time() if now is None else now) - timestamp
        if abs(age) > max_age:
            log.debug("callback refused: timestamp %ss away", int(age))
            return False
    elif require_timestamp:
        log.debug("callback refused: no %s", timestamp_header)
        return False
    secrets = [secret] if isinstance(secret, str) else list(secret)
    # compare_digest on every secret: no early exit an attacker could time.
    ok = [hmac.compare_digest(callback_signature(s, timestamp, body).encode(),
                              given.strip().encode("ascii", "replace")) for s in secrets]
    return any(ok)
