"""Per-job S3 buckets (spec §3 step 10): the downloaded file is uploaded to the caller's
bucket under ``<id[0:3]>/<id>``, with the job's ``extra`` (a JSON object) as user metadata.
boto3 in worker threads: its clients are thread-safe, one per region, made once. The
endpoint, credentials and region defaults come from the environment as for any AWS SDK
(``AWS_ENDPOINT_URL_S3`` points it at an S3-compatible server)."""

from __future__ import annotations

import math
import threading
from typing import Any

import orjson

from pazari.downloader.errors import DownloadError

PHASE = "storing file to job specified AWS S3 bucket"


def metadata(extra: str) -> dict[str, str]:
    """The user metadata of a job's ``extra``: string values as they are, numbers truncated
    to integers, anything else dropped; an ``extra`` that is not a JSON object fails the
    job (the original's ``Could not unmarhal Extra``)."""
    if not extra:
        return {}
    try:
        doc = orjson.loads(extra)
    except orjson.JSONDecodeError as exc:
        raise DownloadError("Could not unmarhal Extra", str(exc), retriable=False) from None
    if not isinstance(doc, dict):
        raise DownloadError("Could not unmarhal Extra", "extra is not a JSON object",
                            retriable=False)
    out: dict[str, str] = {}
    for key, value in doc.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                continue
            out[key] = str(int(value))
    return out


class Uploader:
    """One boto3 S3 client per region, created on first use (creation costs ~50 ms)."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                import boto3  # type: ignore[import-untyped]

                client = boto3.session.Session().client("s3", region_name=region or None)
                self._clients[region] = client
            return client

    def upload(self, bucket: str, region: str, key: str, path: str | None,
               body: bytes | None, meta: dict[str, str], phase: str = PHASE) -> None:
        """Blocking: run it in a thread. Raises DownloadError (not retriable, as a store
        error in the original)."""
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            client = self._client(region)
            if body is not None:
                client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)
            else:
                assert path is not None
                client.upload_file(path, bucket, key, ExtraArgs={"Metadata": meta})
        except (BotoCoreError, ClientError, OSError) as exc:
            raise DownloadError(phase, str(exc), retriable=False) from None

    def delete(self, bucket: str, region: str, key: str) -> None:
        """Blocking: the reaper's DeleteObject (a missing object is no error in S3)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client(region).delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"s3://{bucket}/{key}: {exc}") from None
