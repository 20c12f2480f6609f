"""The Redis hash encodings of Job and Aggregation (spec §2): the original's field names and
value encodings, so an existing Redis and the Go services keep working. The keys they live
under are in :mod:`pazari.downloader.store`."""

from __future__ import annotations

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
    job = Job()
    for key, value in h.items():
        setter = _SETTERS.get(key)
        if setter is None:
            raise ValueError(f"Field {key} with value {value} was not found in Job struct")
        setter(job, value)
    return job


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
    it = iter(flat)
    return {to_str(k): to_str(v) for k, v in zip(it, it, strict=True)}


def to_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
