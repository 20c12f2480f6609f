"""``downloader api`` (spec §1): every validation rule with its exact 400 message, the Redis
layout it writes, /retry, /hb, /stats and /dashboard/aggregations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pazari.downloader.job import FAILED, Job
from pazari.downloader.store import Store

from .conftest import ApiHandle

BASE: dict[str, Any] = {"url": "http://example.com/a.png", "aggr_id": "aggr",
                        "aggr_limit": 4, "callback_url": "http://cb.example/x"}
KAFKA: dict[str, Any] = {"url": "http://example.com/a.png", "aggr_id": "aggr",
                         "aggr_limit": 4, "callback_type": "kafka", "callback_dst": "topic"}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


JOB_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("url-missing", _with(BASE, url=...), "URL must be a string"),
    ("url-number", _with(BASE, url=3), "URL must be a string"),
    ("url-empty", _with(BASE, url=""), 'Could not parse URL: parse "": empty url'),
    ("url-relative", _with(BASE, url="foo"),
     'Could not parse URL: parse "foo": invalid URI for request'),
    ("url-bad-port", _with(BASE, url="http://a:x/"),
     'Could not parse URL: parse "http://a:x/": invalid port ":x" after host'),
    ("url-no-scheme", _with(BASE, url=":foo"),
     'Could not parse URL: parse ":foo": missing protocol scheme'),
    ("url-control", _with(BASE, url="http://a/\x01"),
     'Could not parse URL: parse "http://a/\\x01": net/url: invalid control character in URL'),
    ("aggr-id-number", _with(BASE, aggr_id=1), "aggr_id must be a string"),
    ("aggr-id-empty", _with(BASE, aggr_id=""), "aggr_id cannot be empty"),
    ("callback-url-empty", _with(BASE, callback_url=""),
     'Could not parse callback URL: parse "": empty url'),
    ("callback-type-missing", _with(KAFKA, callback_type=...), "callback_type must be a string"),
    ("callback-dst-missing", _with(KAFKA, callback_dst=...), "callback_dst must be a string"),
    ("callback-both-empty", _with(KAFKA, callback_type="", callback_dst=""),
     'You need to provide both callback_type ("") and callback_dst ("")'),
    ("callback-dst-empty", _with(KAFKA, callback_dst=""),
     'You need to provide both callback_type ("kafka") and callback_dst ("")'),
    ("callback-dst-bad-http", _with(KAFKA, callback_type="http", callback_dst="http"),
     'Could not parse URL: parse "http": invalid URI for request'),
    ("mime-null", _with(BASE, mime_type=None), "MimeType pattern must be a string"),
    ("mime-bad-bracket", _with(BASE, mime_type="[]a]"), 'Invalid MimeType Pattern, "[]a]"'),
    ("mime-backslash", _with(BASE, mime_type="image/*,\\"), 'Invalid MimeType Pattern, "\\\\"'),
    ("mime-any-type", _with(BASE, mime_type_any="image/png"),
     "mime_type_any must be an array of strings"),
    ("max-retries-string", _with(BASE, max_retries="2"),
     "Max retries must be a number, was: string"),
    ("max-retries-null", _with(BASE, max_retries=None), "Max retries must be a number, was: <nil>"),
    ("max-retries-negative", _with(BASE, max_retries=-1), "Max retries must not be negative"),
    ("image-size-string", _with(BASE, extract_image_size="true"),
     "ExtractImageSize must be a boolean"),
    ("timeout-string", _with(BASE, download_timeout="4"), "Download timeout must be a number"),
    ("timeout-null", _with(BASE, download_timeout=None), "Download timeout must be a number"),
    ("timeout-zero", _with(BASE, download_timeout=0.5), "Download timeout must be greater than 0"),
    ("headers-null", _with(BASE, request_headers=None), "request_headers must be a dictionary"),
    ("headers-list", _with(BASE, request_headers=[]), "request_headers must be a dictionary"),
    ("headers-number", _with(BASE, request_headers={"X-A": 3}),
     "Values of request headers keys must be either strings or ints.Given value is 3"),
    ("s3-region-alone", _with(BASE, s3_region="eu"), "s3_region provided without an s3_bucket"),
    ("s3-bucket-alone", _with(BASE, s3_bucket="b"), "s3_bucket provided without an s3_region"),
]

AGGR_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("limit-missing", _with(BASE, aggr_limit=...), "Aggregation limit must be a number"),
    ("limit-string", _with(BASE, aggr_limit="4"), "Aggregation limit must be a number"),
    ("limit-zero", _with(BASE, aggr_limit=0), "Aggregation limit must be greater than 0"),
    ("limit-fraction", _with(BASE, aggr_limit=0.9), "Aggregation limit must be greater than 0"),
    ("proxy-null", _with(BASE, aggr_proxy=None), "Aggregation proxy must be a string"),
    ("proxy-relative", _with(BASE, aggr_proxy="example"),
     'Aggregation proxy must be a valid URI: parse "example": invalid URI for request'),
    ("rate-zero", _with(BASE, aggr_rate=0), "Aggregation rate must be greater than 0"),
]


@pytest.mark.parametrize(("body", "message"), [(b, m) for _, b, m in JOB_ERRORS],
                         ids=[i for i, _, _ in JOB_ERRORS])
async def test_job_validation_messages(api: ApiHandle, body: dict[str, Any], message: str
                                       ) -> None:
    raw = json.dumps(body)
    status, text = await api.post("/download", raw)
    assert status == 400
    assert text == f"Error unmarshalling body '{raw}' to Job: {message}\n"


@pytest.mark.parametrize(("body", "message"), [(b, m) for _, b, m in AGGR_ERRORS],
                         ids=[i for i, _, _ in AGGR_ERRORS])
async def test_aggregation_validation_messages(api: ApiHandle, body: dict[str, Any],
                                               message: str) -> None:
    raw = json.dumps(body)
    status, text = await api.post("/download", raw)
    assert status == 400
    assert text == f"Error unmarshalling body '{raw}' to Aggregation: {message}\n"


@pytest.mark.parametrize(("raw", "message"), [
    ("", "unexpected end of JSON input"),
    ("xyz", "invalid character 'x' looking for beginning of value"),
    ("[1]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
], ids=["empty", "garbage", "array"])
async def test_body_not_an_object(api: ApiHandle, raw: str, message: str) -> None:
    status, text = await api.post("/download", raw)
    assert status == 400
    assert text == f"Error unmarshalling body '{raw}' to Job: {message}\n"


async def test_enqueue_writes_original_layout(api: ApiHandle, store: Store) -> None:
    body = _with(BASE, max_retries=3, extract_image_size=True, download_timeout=7.9,
                 request_headers={"X-A": "b"}, extra="opaque", mime_type="image/*")
    async with api.session.post(api.url + "/download", data=json.dumps(body)) as resp:
        assert resp.status == 201
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        text = await resp.text()
    job_id = json.loads(text)["id"]
    assert text == f'{{"id":"{job_id}"}}'
    assert re.fullmatch(r"[A-Za-z0-9_-]{14}", job_id)
    raw = {k.decode(): v.decode() for k, v in (await store.r.hgetall(f"job:{job_id}")).items()}
    assert raw == {
        "ID": job_id, "URL": body["url"], "AggrID": "aggr", "MaxRetries": "3",
        "DownloadState": "Pending", "DownloadCount": "0", "DownloadMeta": "",
        "CallbackState": "", "CallbackType": "http", "CallbackDst": BASE["callback_url"],
        "CallbackURL": BASE["callback_url"], "DownloadURL": "", "CallbackMeta": "",
        "CallbackCount": "0", "Extra": "opaque", "ResponseCode": "0", "MimeType": "image/*",
        "ExtractImageSize": "1", "ImageSize": "", "DownloadTimeout": "7",
        "RequestHeaders": '{"X-A":"b"}', "S3Bucket": "", "S3Region": "",
    }
    aggr = {k.decode(): v.decode() for k, v in (await store.r.hgetall("aggr:aggr")).items()}
    assert aggr == {"ID": "aggr", "Limit": "4", "Proxy": "", "ExpiresAt": ""}
    [(member, score)] = await store.r.zrange("jobs:aggr", 0, -1, withscores=True)
    assert member.decode() == job_id and score == int(score) and score > 1.6e9


async def test_defaults_encode_null(api: ApiHandle, store: Store) -> None:
    status, text = await api.post("/download", _with(KAFKA))
    assert status == 201
    job_id = json.loads(text)["id"]
    h = await store.r.hgetall(f"job:{job_id}")
    assert h[b"MaxRetries"] == b"null" and h[b"RequestHeaders"] == b"null"
    assert h[b"ExtractImageSize"] == b"0" and h[b"CallbackType"] == b"kafka"


async def test_existing_aggregation_keeps_limit(api: ApiHandle, store: Store) -> None:
    assert (await api.post("/download", _with(BASE, aggr_limit=2)))[0] == 201
    assert (await api.post("/download", _with(BASE, aggr_limit=9)))[0] == 201
    assert await store.r.hget("aggr:aggr", "Limit") == b"2"
    assert await store.r.zcard("jobs:aggr") == 2


@pytest.mark.parametrize(("method", "path", "status", "body"), [
    ("GET", "/download", 405, "Invalid request method\n"),
    ("PUT", "/retry/x", 405, "Invalid request method\n"),
    ("POST", "/download/", 404, "404 page not found\n"),
    ("POST", "/retry/nosuchjob", 400, "Error fetching nosuchjob from Redis: Not Found\n"),
    ("POST", "/retry/", 400, "Error fetching retry from Redis: Not Found\n"),
    ("GET", "/stats/processor", 404, "Could not find stats for entity processor\n"),
    ("GET", "/stats/processor?x=1", 404, "Could not find stats for entity processor?x=1\n"),
    ("GET", "/dashboard/aggregations", 200, "[]"),
    ("GET", "/hb", 200, "OK"),
], ids=["download-get", "retry-put", "download-slash", "retry-missing", "retry-no-id",
        "stats-missing", "stats-query", "aggregations-empty", "hb-ok"])
async def test_routes(api: ApiHandle, method: str, path: str, status: int, body: str) -> None:
    async with api.session.request(method, api.url + path) as resp:
        assert resp.status == status
        assert await resp.text() == body
        if status >= 400:
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_heartbeat_file_drains(api: ApiHandle, tmp_path: Path) -> None:
    (tmp_path / "disabled").touch()
    async with api.session.get(api.url + "/hb") as resp:
        assert resp.status == 503
        assert await resp.text() == f"Service disabled, '{tmp_path / 'disabled'}' exists!\n"


async def test_stats_and_aggregations(api: ApiHandle, store: Store) -> None:
    await store.put_stats("processor", {"alive": 1, "workers": 3}, 10_000)
    for _ in range(3):
        await api.post("/download", _with(BASE, aggr_id="big"))
    await api.post("/download", _with(BASE, aggr_id="small"))
    async with api.session.get(api.url + "/stats/processor") as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
        assert await resp.json() == {"alive": 1, "workers": 3}
    async with api.session.get(api.url + "/dashboard/aggregations") as resp:
        assert resp.headers["Content-Type"] == "application/json"
        rows = sorted(await resp.json(), key=lambda r: r["name"])
    assert rows == [{"name": "jobs:big", "size": 3}, {"name": "jobs:small", "size": 1}]


async def test_retry_failed_callback(api: ApiHandle, store: Store) -> None:
    status, text = await api.post("/download", BASE)
    job_id = json.loads(text)["id"]
    job = await store.get_job(job_id)
    assert job is not None
    status, text = await api.post(f"/retry/{job_id}", b"")
    assert status == 400
    assert text == f"Error with callback state of the job {job}: \n"
    job.callback_state, job.callback_count, job.callback_meta = FAILED, 2, "boom"
    await store.save_job(job)
    assert (await api.post(f"/retry/{job_id}", b""))[0] == 204
    again = await store.get_job(job_id)
    assert again is not None
    assert (again.callback_state, again.callback_count, again.callback_meta) == ("Pending", 0, "")
    assert await store.r.zscore("CallbackQueue", job_id) is not None


def test_job_string_format() -> None:
    job = Job(id="6QEywYsd0jrKAg", aggr_id="a", url="http://x/", download_timeout=3,
              request_headers={"B": "2", "A": "1"})
    assert str(job) == (
        "Job{ID:6QEywYsd0jrKAg, Aggr:a, URL:http://x/, ExtractImageSize:false, ImageSize: , "
        "callback_url:, callback_type:, callback_dst:, Timeout:3, RequestHeaders:map[A:1 B:2], "
        "DownloadURL:}")


def test_download_url_does_not_grow() -> None:
    job = Job(id="6QEywYsd0jrKAg", download_url="http://localhost/foo", download_state="Success")
    first = json.loads(job.callback_payload())
    second = json.loads(job.callback_payload())
    assert first["download_url"] == second["download_url"] == \
        "http://localhost/foo/6QE/6QEywYsd0jrKAg"
    assert list(first) == ["success", "error", "extra", "image_size", "resource_url",
                           "download_url", "job_id", "response_code", "delivered",
                           "delivery_error"]
