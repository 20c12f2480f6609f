"""The Redis hash encodings of Job and Aggregation (spec §2): the original's field names and
value encodings, so an existing Redis and the Go services keep working. The keys they live
under are in :mod:`pazari.downloader.store`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from pazari.downloader.job import Aggregation, Job

# ---------------------------------------------------------------- hash encodings
# Field names and value encodings are the original's, so an existing Redis and the Go
# services keep working: bools are "1"/"0", MaxRetries is "null" or an integer,
# RequestHeaders is a JSON string ("null" when none), counters are decimal strings.

def encode_job(job: Job) -> dict[str, str]:
    """Every field, as the original's HMSET wrote them."""
    h = {
        "ID": job.id,
        "URL": job.url,
        "AggrID": job.aggr_id,
        "MaxRetries": "null" if job.max_retries is None else str(job.max_retries),
        "DownloadState": job.download_state,
        "DownloadCount": str(job.download_count),
        "DownloadMeta": job.download_meta,
        "CallbackState": job.callback_state,
        "CallbackType": job.callback_type,
        "CallbackDst": job.callback_dst,
        "CallbackURL": job.callback_url,
        "DownloadURL": job.download_url,
        "CallbackMeta": job.callback_meta,
        "CallbackCount": str(job.callback_count),
        "Extra": job.extra,
        "ResponseCode": str(job.response_code),
        "MimeType": job.mime_type,
        "ExtractImageSize": "1" if job.extract_image_size else "0",
        "ImageSize": job.image_size,
        "DownloadTimeout": str(job.download_timeout),
        "RequestHeaders": orjson.dumps(job.request_headers).decode(),
        "S3Bucket": job.s3_bucket,
        "S3Region": job.s3_region,
    }
    if job.mime_type_any:
        h["MimeTypeAny"] = orjson.dumps(job.mime_type_any).decode()
    if job.reclaim_count:
        h["ReclaimCount"] = str(job.reclaim_count)
    return h

def job_pairs(job: Job) -> list[str]:
    """``encode_job`` flattened to ``[field, value, ...]`` (HSET's argument order)."""
    return pairs(encode_job(job))


def outcome_pairs(job: Job) -> list[str]:
    """The fields a download outcome changes (the rest of the hash was written by the
    enqueue and the pop), in the original's encodings."""
    return ["DownloadState", job.download_state, "DownloadCount", str(job.download_count),
            "DownloadMeta", job.download_meta, "CallbackState", job.callback_state,
            "DownloadURL", job.download_url, "ResponseCode", str(job.response_code),
            "ImageSize", job.image_size]


def decode_job(h: dict[str, str]) -> Job:
    """Decode an HGETALL reply; raise ValueError like the original's reader on an
    unknown field or a bad value."""
    kwargs: dict[str, object] = {}
    for key, value in h.items():
        name = _STR_FIELDS.get(key)
        if name is not None:
            kwargs[name] = value
            continue
        conv = _CONVERTED.get(key)
        if conv is None:
            raise ValueError(f"Field {key} with value {value} was not found in Job struct")
        kwargs[conv[0]] = conv[1](value)
    return Job(**kwargs)  # type: ignore[arg-type]


def _int(v: str) -> int:
    return int(v) if v else 0


def _max_retries(v: str) -> int | None:
    return None if v in ("", "null") else int(v)


def _headers(v: str) -> dict[str, str] | None:
    return orjson.loads(v) if v else None


def _any(v: str) -> list[str]:
    return list(orjson.loads(v)) if v else []


def _bool(v: str) -> bool:
    return v in ("1", "true")


# Hash field -> Job attribute, for the fields stored as they are.
_STR_FIELDS = {
    "ID": "id", "URL": "url", "AggrID": "aggr_id", "DownloadState": "download_state",
    "DownloadMeta": "download_meta", "CallbackState": "callback_state",
    "CallbackType": "callback_type", "CallbackDst": "callback_dst",
    "CallbackURL": "callback_url", "DownloadURL": "download_url",
    "CallbackMeta": "callback_meta", "Extra": "extra", "MimeType": "mime_type",
    "ImageSize": "image_size", "S3Bucket": "s3_bucket", "S3Region": "s3_region",
}
# Hash field -> (Job attribute, decoder) for the others.
_CONVERTED: dict[str, tuple[str, Callable[[str], object]]] = {
    "MaxRetries": ("max_retries", _max_retries),
    "DownloadCount": ("download_count", _int),
    "CallbackCount": ("callback_count", _int),
    "ResponseCode": ("response_code", _int),
    "ExtractImageSize": ("extract_image_size", _bool),
    "DownloadTimeout": ("download_timeout", _int),
    "RequestHeaders": ("request_headers", _headers),
    "MimeTypeAny": ("mime_type_any", _any),
    "ReclaimCount": ("reclaim_count", _int),
}


def encode_aggr(aggr: Aggregation) -> dict[str, str]:
    h = {"ID": aggr.id, "Limit": str(aggr.limit), "Proxy": aggr.proxy,
         "ExpiresAt": aggr.expires_at}
    if aggr.rate:
        h["Rate"] = repr(aggr.rate)
    return h

def decode_aggr(h: dict[str, str]) -> Aggregation:
    known = {"ID", "Limit", "Proxy", "ExpiresAt", "Rate"}
    for key, value in h.items():
        if key not in known:
            raise ValueError(
                f"Field {key} with value {value} was not found in Aggregation struct")
    return Aggregation(id=h.get("ID", ""), limit=_int(h.get("Limit", "")),
               proxy=h.get("Proxy", ""), expires_at=h.get("ExpiresAt", ""),
               rate=float(h.get("Rate") or 0))


def pairs(h: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in h.items():
        out += (k, v)
    return out


def decode_hash(flat: list[Any]) -> dict[str, str]:
    """A flat ``[field, value, ...]`` reply as a dict of str. One strict UTF-8 decode for the
    whole reply (a per-item decode was the largest cost of decoding a popped job); NUL, which
    cannot be a separator if a value holds one, falls back to the per-item path."""
    try:
        parts = b"\x00".join(flat).decode().split("\x00")
    except TypeError:  # not all bytes (a decoded client)
        parts = [to_str(v) for v in flat]
    if len(parts) != len(flat):
        parts = [to_str(v) for v in flat]
    it = iter(parts)
    return dict(zip(it, it, strict=True))


def to_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
