"""The Job and Aggregation records and the callback payload (spec §2, §4).

Hash field names and value encodings are the original's, so that an existing Redis and the
Go services keep working: bools are ``"1"``/``"0"``, ``MaxRetries`` is ``"null"`` or an
integer, ``RequestHeaders`` is a JSON string (``"null"`` when none).
"""

from __future__ import annotations

import base64
import posixpath
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

    # ---------------------------------------------------------------- Redis encoding
    def to_hash(self) -> dict[str, str]:
        """Every field, as the original's HMSET wrote them."""
        h = {
            "ID": self.id,
            "URL": self.url,
            "AggrID": self.aggr_id,
            "MaxRetries": "null" if self.max_retries is None else str(self.max_retries),
            "DownloadState": self.download_state,
            "DownloadCount": str(self.download_count),
            "DownloadMeta": self.download_meta,
            "CallbackState": self.callback_state,
            "CallbackType": self.callback_type,
            "CallbackDst": self.callback_dst,
            "CallbackURL": self.callback_url,
            "DownloadURL": self.download_url,
            "CallbackMeta": self.callback_meta,
            "CallbackCount": str(self.callback_count),
            "Extra": self.extra,
            "ResponseCode": str(self.response_code),
            "MimeType": self.mime_type,
            "ExtractImageSize": "1" if self.extract_image_size else "0",
            "ImageSize": self.image_size,
            "DownloadTimeout": str(self.download_timeout),
            "RequestHeaders": orjson.dumps(self.request_headers).decode(),
            "S3Bucket": self.s3_bucket,
            "S3Region": self.s3_region,
        }
        if self.mime_type_any:
            h["MimeTypeAny"] = orjson.dumps(self.mime_type_any).decode()
        return h

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Job:
        """Decode an HGETALL reply; raise ValueError like the original's reader on an
        unknown field or a bad value."""
        job = cls()
        for key, value in h.items():
            setter = _SETTERS.get(key)
            if setter is None:
                raise ValueError(f"Field {key} with value {value} was not found in Job struct")
            setter(job, value)
        return job

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


def _int(v: str) -> int:
    return int(v) if v else 0


def _set_max_retries(j: Job, v: str) -> None:
    j.max_retries = None if v in ("", "null") else int(v)


def _set_headers(j: Job, v: str) -> None:
    j.request_headers = orjson.loads(v) if v else None


def _set_any(j: Job, v: str) -> None:
    j.mime_type_any = list(orjson.loads(v)) if v else []


def _str(name: str):  # type: ignore[no-untyped-def]
    def set_(j: Job, v: str) -> None:
        setattr(j, name, v)
    return set_


def _num(name: str):  # type: ignore[no-untyped-def]
    def set_(j: Job, v: str) -> None:
        setattr(j, name, _int(v))
    return set_


_SETTERS = {
    "ID": _str("id"),
    "URL": _str("url"),
    "AggrID": _str("aggr_id"),
    "MaxRetries": _set_max_retries,
    "DownloadState": _str("download_state"),
    "DownloadCount": _num("download_count"),
    "DownloadMeta": _str("download_meta"),
    "CallbackState": _str("callback_state"),
    "CallbackType": _str("callback_type"),
    "CallbackDst": _str("callback_dst"),
    "CallbackURL": _str("callback_url"),
    "DownloadURL": _str("download_url"),
    "CallbackMeta": _str("callback_meta"),
    "CallbackCount": _num("callback_count"),
    "Extra": _str("extra"),
    "ResponseCode": _num("response_code"),
    "MimeType": _str("mime_type"),
    "ExtractImageSize": lambda j, v: setattr(j, "extract_image_size", v in ("1", "true")),
    "ImageSize": _str("image_size"),
    "DownloadTimeout": _num("download_timeout"),
    "RequestHeaders": _set_headers,
    "S3Bucket": _str("s3_bucket"),
    "S3Region": _str("s3_region"),
    "MimeTypeAny": _set_any,
}


@dataclass
class Aggregation:
    """``aggr:<id>``: ``ID``, ``Limit``, ``Proxy``, ``ExpiresAt`` (the lease, unix seconds or
    ``""``), plus ``Rate`` (requests/s) only when the client asked for one."""

    id: str
    limit: int
    proxy: str = ""
    expires_at: str = ""
    rate: float = 0.0

    def to_hash(self) -> dict[str, str]:
        h = {"ID": self.id, "Limit": str(self.limit), "Proxy": self.proxy,
             "ExpiresAt": self.expires_at}
        if self.rate:
            h["Rate"] = repr(self.rate)
        return h

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Aggregation:
        known = {"ID", "Limit", "Proxy", "ExpiresAt", "Rate"}
        for key, value in h.items():
            if key not in known:
                raise ValueError(
                    f"Field {key} with value {value} was not found in Aggregation struct")
        return cls(id=h.get("ID", ""), limit=_int(h.get("Limit", "")),
                   proxy=h.get("Proxy", ""), expires_at=h.get("ExpiresAt", ""),
                   rate=float(h.get("Rate") or 0))
