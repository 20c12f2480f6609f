"""pazari.downloader.client against the real `downloader api`/`processor`/`notifier`: jobs
queued through both flavours come back as callbacks whose signatures verify; API errors carry
the API's message; /retry re-queues a failed callback; the verifier refuses forgeries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from pazari.downloader import client as dl
from pazari.downloader.client import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AsyncClient,
    Client,
    ConnectionError,
    ResponseError,
    callback_signature,
    download_body,
    verify_callback,
)
from tests.support.daemon import DaemonFactory
from tests.support.ports import async_wait_for, free_port
from tests.support.services import RedisFactory

from .servers import HTML, Running
from .stack import Stack

pytestmark = pytest.mark.timeout(120)

SECRET = "receiver-secret"

Download = Callable[..., Awaitable[str]]
Retry = Callable[[str], Awaitable[None]]


@pytest.fixture(params=["sync", "asyncio"])
async def api_client(request: pytest.FixtureRequest) -> Any:
    """(download, retry) of one flavour against a URL given later: `make(url)`."""
    made: list[AsyncClient] = []

    def make(url: str, **kw: Any) -> tuple[Download, Retry]:
        if request.param == "sync":
            sync = Client(url, **kw)

            async def download(*a: Any, **k: Any) -> str:
                return await asyncio.to_thread(sync.download, *a, **k)

            async def retry(job_id: str) -> None:
                await asyncio.to_thread(sync.retry, job_id)

            return download, retry
        made.append(AsyncClient(url, **kw))
        return made[-1].download, made[-1].retry

    yield make
    for client in made:
        await client.close()


def _signed_with_timestamp(headers: dict[str, str]) -> bool:
    """Whether this tree's notifier signs a timestamp (issue 11) or the body alone."""
    return any(k.lower() == TIMESTAMP_HEADER.lower() for k in headers)


async def test_download_callback_verifies(stack: Stack, api_client: Any) -> None:
    await stack.start(notifier={"signing_secrets": {stack.receiver.url: SECRET}})
    download, _ = api_client(stack.api_url, aggr_limit=2)
    job_id = await download(f"{stack.file_url}/headers", aggr_id="shop-1",
                            callback_url=stack.receiver.url, mime_type="text/*",
                            extra={"sku": 7}, user_agent="pazari-client-test",
                            max_retries=1, download_timeout=30)
    assert len(job_id) == 14
    await stack.receiver.wait_for_jobs({job_id}, timeout=60)
    got = stack.receiver.one(job_id)
    assert got["success"] and got["extra"] == '{"sku": 7}'
    assert got["download_url"].endswith(f"/{job_id[:3]}/{job_id}")
    headers = stack.receiver.headers[-1]
    raw = got["_raw"]
    strict = _signed_with_timestamp(headers)
    assert verify_callback(raw, headers, SECRET, require_timestamp=strict)
    assert verify_callback(raw, headers, ["old-secret", SECRET], require_timestamp=strict)
    assert not verify_callback(raw + b" ", headers, SECRET, require_timestamp=strict)
    assert not verify_callback(raw, headers, "wrong", require_timestamp=strict)
    # The job really used the client's fields: the file server saw the User-Agent.
    assert [h.get("User-Agent") for h in stack.files.headers_seen] == ["pazari-client-test"]


class VerifyingReceiver:
    """A callback receiver as a user writes one: verify the raw body, 401 if it fails.
    ``/good`` knows the notifier's secret, ``/bad`` another one."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.accepted: list[str] = []
        self.refused = 0
        app = web.Application()
        app.add_routes([web.post("/good", self.good), web.post("/bad", self.bad)])
        self.server = Running(app)

    async def verify(self, request: web.Request, secret: str) -> web.Response:
        raw = await request.read()
        strict = _signed_with_timestamp(dict(request.headers))
        if not verify_callback(raw, request.headers, secret, require_timestamp=strict):
            self.refused += 1
            return web.Response(status=401, text="bad signature")
        self.accepted.append(json.loads(raw)["job_id"])
        return web.Response(text="ok")

    async def good(self, request: web.Request) -> web.Response:
        return await self.verify(request, self.secret)

    async def bad(self, request: web.Request) -> web.Response:
        return await self.verify(request, "not-the-secret")


async def test_receiver_verifies_signatures(stack: Stack) -> None:
    receiver = VerifyingReceiver(SECRET)
    await receiver.server.start()
    try:
        await stack.start(notifier={"max_attempts": 1,
                                    "signing_secrets": {receiver.server.url: SECRET}})
        stack.files.files["p.html"] = (HTML, "text/html")
        async with AsyncClient(stack.api_url) as client:
            good = await client.download(f"{stack.file_url}/file/p.html", aggr_id="v",
                                         callback_url=f"{receiver.server.url}/good")
            bad = await client.download(f"{stack.file_url}/file/p.html", aggr_id="v",
                                        callback_url=f"{receiver.server.url}/bad")
        r = redis.Redis(port=stack.redis.port, decode_responses=True)
        try:
            await async_wait_for(lambda: r.hget(f"job:{bad}", "CallbackState") == "Failed",
                                 30, "the refused callback to fail")
            await async_wait_for(lambda: receiver.accepted == [good], 30, "the good callback")
            assert "401" in (r.hget(f"job:{bad}", "CallbackMeta") or "")
        finally:
            r.close()
        assert receiver.refused == 1
    finally:
        await receiver.server.stop()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"aggr_limit": 0}, "Aggregation limit must be greater than 0"),
        ({"mime_type": "[]a]"}, 'Invalid MimeType Pattern, "[]a]"'),
        ({"callback_url": None}, "to Job: callback_type must be a string"),
    ],
    ids=["aggr_limit_zero", "bad_mime_glob", "no_callback"],
)
async def test_api_error_carries_its_message(
    stack: Stack, api_client: Any, fields: dict[str, Any], message: str
) -> None:
    await stack.start(components=("api",))
    download, _ = api_client(stack.api_url)
    args: dict[str, Any] = {"aggr_id": "a", "callback_url": stack.receiver.url, **fields}
    if args["callback_url"] is None:
        del args["callback_url"]
    with pytest.raises(ResponseError) as info:
        await download(f"{stack.file_url}/file/x", **args)
    assert info.value.status == 400
    assert message in info.value.message
    assert not info.value.message.endswith("\n")


async def test_api_5xx_carries_its_message(
    daemon_factory: DaemonFactory, redis_factory: RedisFactory, tmp_path: Path,
    api_client: Any,
) -> None:
    """A real 5xx: the API's (private) Redis is out of memory (maxmemory, noeviction), so
    it cannot queue the job and answers 500 with its error text, which the client raises
    as ResponseError. (A Redis that is down gives the same 500, but only after the API's
    reconnect retries, ~8 s.)"""
    from .stack import Stack

    stack = Stack(daemon_factory, redis_factory(), tmp_path)
    try:
        await stack.start(components=("api",))
        download, _ = api_client(stack.api_url)
        assert stack.redis.command("CONFIG", "SET", "maxmemory", "1").startswith(b"+OK")
        with pytest.raises(ResponseError) as info:
            await download(f"{stack.file_url}/file/x", aggr_id="a",
                           callback_url=stack.receiver.url)
        assert info.value.status == 500
        assert info.value.message.startswith("Error queueing "), info.value.message
        assert "command not allowed when used memory > 'maxmemory'" in info.value.message
        assert str(info.value).startswith("downloader API answered 500: Error queueing")
        assert stack.daemons["api"].running
    finally:
        await stack.stop()


async def test_retry_requeues_failed_callback(stack: Stack, api_client: Any) -> None:
    await stack.start(notifier={"max_attempts": 1})
    stack.files.files["p.html"] = (HTML, "text/html")
    stack.receiver.fail_first = 1
    download, retry = api_client(stack.api_url)
    job_id = await download(f"{stack.file_url}/file/p.html", aggr_id="a",
                            callback_url=stack.receiver.url)
    r = redis.Redis(port=stack.redis.port, decode_responses=True)
    try:
        await async_wait_for(lambda: r.hget(f"job:{job_id}", "CallbackState") == "Failed", 30,
                             "the callback to fail")
    finally:
        r.close()
    await retry(job_id)
    await stack.receiver.wait_for_jobs({job_id}, timeout=30)
    with pytest.raises(ResponseError, match="Not Found") as info:
        await retry("no/such job")
    assert info.value.status == 400


async def test_unreachable_api_is_connection_error(api_client: Any) -> None:
    download, retry = api_client(f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(ConnectionError):
        await download("http://127.0.0.1/x", aggr_id="a", callback_url="http://127.0.0.1/cb")
    with pytest.raises(ConnectionError):
        await retry("abc")


def test_body_follows_ferto() -> None:
    body = download_body("http://h/a.jpg", "a", 3, callback_type="kafka", callback_dst="t",
                         user_agent="ua", request_headers={"user-agent": "mine"},
                         extra="raw", s3_bucket="b", s3_region="eu")
    assert body == {"aggr_id": "a", "aggr_limit": 3, "url": "http://h/a.jpg",
                    "callback_type": "kafka", "callback_dst": "t", "s3_bucket": "b",
                    "s3_region": "eu", "extra": "raw",
                    "request_headers": {"user-agent": "mine"}}
    with pytest.raises(ValueError):
        download_body("http://h/a", "a", 1, s3_bucket="b")


def test_signature_matches_the_notifier() -> None:
    """The verifier's HMAC is the notifier's, whichever signing this tree has."""
    body, ts = b'{"job_id":"x"}', 1_700_000_000
    try:
        from pazari.downloader import signing  # type: ignore[attr-defined]
    except ImportError:
        from pazari.downloader.notifier import signature

        assert callback_signature("k", None, body) == signature("k", body)
    else:
        assert callback_signature("k", ts, body) == signing.signature("k", ts, body)
    mac = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert callback_signature("k", ts, body) == f"sha256={mac}"


NOW = 1_800_000_000.0
BODY = json.dumps({"job_id": "abc", "success": True}).encode()


def _signed(ts: int = int(NOW), secret: str = SECRET, body: bytes = BODY) -> dict[str, str]:
    return {SIGNATURE_HEADER: callback_signature(secret, ts, body), TIMESTAMP_HEADER: str(ts)}


@pytest.mark.parametrize(
    ("headers", "body", "ok"),
    [
        (_signed(), BODY, True),
        ({k.lower(): v for k, v in _signed().items()}, BODY, True),
        (_signed(int(NOW) - 299), BODY, True),
        (_signed(int(NOW) - 301), BODY, False),
        (_signed(int(NOW) + 301), BODY, False),
        (_signed(), BODY + b"\n", False),
        (_signed(secret="other"), BODY, False),
        ({**_signed(), TIMESTAMP_HEADER: str(int(NOW) - 1)}, BODY, False),
        ({**_signed(), TIMESTAMP_HEADER: " 1800000000"}, BODY, False),
        ({**_signed(), TIMESTAMP_HEADER: "1.8e9"}, BODY, False),
        ({**_signed(), TIMESTAMP_HEADER: "9" * 400}, BODY, False),
        ({**_signed(), TIMESTAMP_HEADER: "\uff11\uff18" + "\uff10" * 8}, BODY, False),
        ({TIMESTAMP_HEADER: str(int(NOW))}, BODY, False),
        ({**_signed(), SIGNATURE_HEADER: _signed()[SIGNATURE_HEADER][7:]}, BODY, False),
        ({**_signed(), SIGNATURE_HEADER: "sha256="}, BODY, False),
        ({**_signed(), SIGNATURE_HEADER: "sha256=\u00e9"}, BODY, False),
        ({SIGNATURE_HEADER: callback_signature(SECRET, None, BODY)}, BODY, False),
    ],
    ids=["valid", "lowercase_headers", "just_fresh", "stale", "from_the_future",
         "tampered_body", "wrong_secret", "timestamp_swapped", "timestamp_space",
         "timestamp_float", "timestamp_huge", "timestamp_non_ascii_digits", "no_signature",
         "no_prefix", "empty_mac", "non_ascii_mac", "replayable_body_only"],
)
def test_verify_refuses_forgeries(headers: dict[str, str], body: bytes, ok: bool) -> None:
    assert verify_callback(body, headers, SECRET, now=NOW) is ok


def test_body_only_signatures_only_when_asked() -> None:
    headers = {SIGNATURE_HEADER: callback_signature(SECRET, None, BODY)}
    assert verify_callback(BODY, headers, SECRET, require_timestamp=False)
    assert not verify_callback(BODY, headers, SECRET)
    assert verify_callback(BODY, _signed(int(time.time())), SECRET)
    assert dl.SIGNATURE_HEADER == "X-Downloader-Signature"
