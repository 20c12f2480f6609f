"""The Job and Aggregation records and the callback payload (spec §2, §4). Their Redis
encoding lives in :mod:`pazari.downloader.store`."""

from __future__ import annotations

import base64
import functools
import posixpath
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import orjson

# DownloadState / CallbackState values (spec §2 Job lifecycle).
PENDING = "Pending"
IN_PROGRESS = "InProgress"
SUCCESS = "Success"
FAILED = "Failed"


def new_job_id() -> str:
    """10 random bytes as unpadded base64url: always 14 characters of ``[A-Za-z0-9_-]``.

    The original used a time-seeded PRNG; a CSPRNG keeps the format and drops the
    predictability."""
    return base64.urlsafe_b64encode(secrets.token_bytes(10)).rstrip(b"=").decode()


_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=64)
def _download_base(download_url: str) -> str | None:
    """scheme://netloc plus the normalized path of a DownloadURL, without a trailing "/";
    None for a path normpath keeps "//" in front of (POSIX: implementation-defined)."""
    parts = urlsplit(download_url)
    path = posixpath.normpath(parts.path or "/")
    if path.startswith("//"):
        return None
    return urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))


def go_bool(b: bool) -> str:
    return "true" if b else "false"


@dataclass
class Job:
    id: str = ""
    url: str = ""
    aggr_id: str = ""
    max_retries: int | None = None
    download_state: str = ""
    download_count: int = 0
    download_meta: str = ""
    callback_state: str = ""
    callback_type: str = ""
    callback_dst: str = ""
    callback_url: str = ""
    download_url: str = ""
    callback_meta: str = ""
    callback_count: int = 0
    extra: str = ""
    response_code: int = 0
    mime_type: str = ""
    extract_image_size: bool = False
    image_size: str = ""
    download_timeout: int = 0
    request_headers: dict[str, str] | None = None
    s3_bucket: str = ""
    s3_region: str = ""
    # Beyond the original (OR list). Written only when set, so that the Go readers, which
    # reject unknown fields, keep working with jobs that do not use it.
    mime_type_any: list[str] = field(default_factory=list)
    # Beyond the original: how often the job was taken back from a processor that died
    # while holding it (written by the reclaim script only, so the Go readers see it only
    # after a crash). Past ``max_reclaims`` the job fails instead (issue 11).
    reclaim_count: int = 0

    # ------------------------------------------------------------------- behaviour
    def has_callback(self) -> bool:
        return self.callback_url != "" or self.callback_dst != ""

    def destination(self) -> tuple[str, str]:
        """(backend, dst): a legacy callback_url wins (spec §1)."""
        if self.callback_url:
            return "http", self.callback_url
        return self.callback_type, self.callback_dst

    def path(self) -> str:
        """Storage path ``<id[0:3]>/<id>`` (spec §3 step 10)."""
        return f"{self.id[:3]}/{self.id}"

    def full_download_url(self) -> str:
        """``path.Join`` of the DownloadURL's path with the storage path. Computed, never
        written back: the original appended the path again on every retry (limitation 7)."""
        if not self.download_url:
            return ""
        base = _download_base(self.download_url) if _PLAIN_ID.fullmatch(self.id) else None
        if base is not None:
            # An id of base64url characters has no "." or "/" segment: normpath(join(base,
            # rel)) is the normalized base plus "/" + rel (the base is normalized once).
            return base + "/" + self.path()
        parts = urlsplit(self.download_url)
        joined = posixpath.join(parts.path or "/", self.path())
        return urlunsplit((parts.scheme, parts.netloc, posixpath.normpath(joined), "", ""))

    def callback_payload(self) -> bytes:
        """The callback body, keys in the Go struct order (spec §4 Callback payload)."""
        success = self.download_state == SUCCESS
        return orjson.dumps({
            "success": success,
            "error": self.download_meta,
            "extra": self.extra,
            "image_size": self.image_size,
            "resource_url": self.url,
            "download_url": self.full_download_url() if success else "",
            "job_id": self.id,
            "response_code": self.response_code,
            "delivered": True,
            "delivery_error": "",
        })

    def __str__(self) -> str:
        # The original's Job.String() format (spec §5 Logging); Go prints a map as map[k:v].
        headers = "map[" + " ".join(
            f"{k}:{v}" for k, v in sorted((self.request_headers or {}).items())) + "]"
        return (
            f"Job{{ID:{self.id}, Aggr:{self.aggr_id}, URL:{self.url}, "
            f"ExtractImageSize:{go_bool(self.extract_image_size)}, "
            f"ImageSize: {self.image_size}, callback_url:{self.callback_url}, "
            f"callback_type:{self.callback_type}, callback_dst:{self.callback_dst}, "
            f"Timeout:{self.download_timeout}, RequestHeaders:{headers}, "
            f"DownloadURL:{self.download_url}}}"
        )


@dataclass
class Aggregation:
    """``aggr:<id>``: ``ID``, ``Limit``, ``Proxy``, ``ExpiresAt`` (the lease, unix seconds or
    ``""``), plus ``Rate`` (requests/s) only when the client asked for one."""

    id: str
    limit: int
    proxy: str = ""
    expires_at: str = ""
    rate: float = 0.0
