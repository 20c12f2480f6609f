"""The notifier through the real subcommands: Kafka delivery (tansu), HMAC signatures,
retries then Failed, /retry, unknown backends, and cleanup of jobs without a callback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from pazari.downloader.codec import encode_job
from pazari.downloader.job import Job
from pazari.downloader.store import decode_job
from tests.support.ports import async_wait_for
from tests.support.services import KafkaBroker, consume_all

from .conftest import DOWNLOADER_BIN, make_config, write_config
from .servers import HTML
from .stack import Stack

pytestmark = pytest.mark.timeout(120)


def _r(stack: Stack) -> redis.Redis:
    return redis.Redis(port=stack.redis.port, decode_responses=True)


async def test_kafka_callbacks_with_delivery_reports(stack: Stack, kafka_broker: KafkaBroker,
                                                     kafka_topic: str) -> None:
    await stack.start(backends={"http": {"timeout": 5}, "kafka": {
        "bootstrap.servers": kafka_broker.bootstrap, "go.delivery.reports": True,
        "request.required.acks": -1, "message.send.max.retries": 3}},
        notifier={"signing_secrets": {kafka_topic: "k-secret"}})
    stack.files.files["p.html"] = (HTML, "text/html")
    ids = [await stack.post(f"{stack.file_url}/file/p.html", callback_url=None,
                            callback_type="kafka", callback_dst=kafka_topic, extra=str(i))
           for i in range(5)]
    records = await asyncio.to_thread(consume_all, kafka_broker.bootstrap, kafka_topic, 5, 60)
    docs = [orjson.loads(rec.value) for rec in records]
    assert sorted(d["job_id"] for d in docs) == sorted(ids)
    assert all(d["success"] and d["delivered"] and d["delivery_error"] == "" for d in docs)
    r = _r(stack)
    try:
        await async_wait_for(lambda: r.zcard("JobDeletionQueue") == 5, 20, "deletion schedule")
        assert not [i for i in ids if r.exists(f"job:{i}")]
    finally:
        r.close()


async def test_hmac_signature_and_failed_then_retry(stack: Stack) -> None:
    secret = "s3cr3t"
    await stack.start(notifier={"max_attempts": 2,
                                "signing_secrets": {stack.receiver.url: secret}})
    stack.files.files["p.html"] = (HTML, "text/html")
    stack.receiver.fail_first = 2  # both attempts fail → Failed, kept for /retry
    job_id = await stack.post(f"{stack.file_url}/file/p.html")
    r = _r(stack)
    try:
        await async_wait_for(lambda: r.hget(f"job:{job_id}", "CallbackState") == "Failed", 30,
                             "the callback to fail")
        job = r.hgetall(f"job:{job_id}")
        assert job["CallbackCount"] == "2"
        assert job["CallbackMeta"] == "Received Status: 500 Internal Server Error"
        assert job["DownloadURL"] == "http://localhost/assets"  # never grows (limitation 7)
        assert stack.session is not None
        async with stack.session.post(f"{stack.api_url}/retry/{job_id}") as resp:
            assert resp.status == 204
        await stack.receiver.wait_for_jobs({job_id}, timeout=30)
    finally:
        r.close()
    got = stack.receiver.one(job_id)
    assert got["download_url"] == f"http://localhost/assets/{job_id[:3]}/{job_id}"
    sig = stack.receiver.headers[-1]["X-Downloader-Signature"]
    ts = stack.receiver.headers[-1]["X-Downloader-Timestamp"]
    assert abs(int(ts) - time.time()) < 60
    mac = hmac.new(secret.encode(), ts.encode() + b"." + got["_raw"], hashlib.sha256)
    assert sig == "sha256=" + mac.hexdigest()


async def test_undefined_backend_fails_callback(stack: Stack) -> None:
    await stack.start()
    stack.files.files["p.html"] = (HTML, "text/html")
    job_id = await stack.post(f"{stack.file_url}/file/p.html", callback_url=None,
                              callback_type="sqs", callback_dst="queue")
    r = _r(stack)
    try:
        await async_wait_for(lambda: r.hget(f"job:{job_id}", "CallbackState") == "Failed", 30,
                             "the callback to fail")
        meta = r.hget(f"job:{job_id}", "CallbackMeta") or ""
    finally:
        r.close()
    assert meta.startswith(f"Undefined backend sqs for job Job{{ID:{job_id}")


async def test_job_without_callback_is_cleaned(stack: Stack) -> None:
    """Limitation 8: a job without a callback (s3_bucket only) is deleted after
    deletion_interval instead of staying in Redis forever."""
    await stack.start()
    job_id = await stack.post(f"{stack.file_url}/file/none", callback_url=None,
                              s3_bucket="b", s3_region="eu")
    r = _r(stack)
    try:
        await async_wait_for(lambda: r.zscore("JobDeletionQueue", job_id) is not None, 30,
                             "deletion schedule")
        job = decode_job(r.hgetall(f"job:{job_id}"))
        assert job.download_state == "Failed" and job.callback_state == ""
        # Make it due now: the reaper deletes the hash.
        r.zadd("JobDeletionQueue", {job_id: 0})
        await async_wait_for(lambda: not r.exists(f"job:{job_id}"), 10, "the reaper")
    finally:
        r.close()


@pytest.mark.parametrize(("command", "change", "message"), [
    ("notifier", {"backends": {"smtp": {"x": 1}}}, "$.backends.smtp: unknown backend"),
    ("notifier", {"notifier": {"concurrency": 0}}, "$.notifier.concurrency"),
    ("notifier", {"backends": {"http": {}}}, "No backends are enabled"),
    ("processor", {"processor": {"download_url": "nope"}}, "Could not parse Download URL"),
    ("processor", {"processor": {"storage_dir": ""}}, "$.processor.storage_dir"),
    ("api", {"processor": {"bogus": 1}}, "$.processor.bogus: unknown key"),
    ("processor", {"processor": {"sync": "never"}}, "$.processor.sync: must be"),
], ids=["unknown-backend", "no-concurrency", "no-backends", "bad-download-url",
        "no-storage", "unknown-key", "bad-sync-mode"])
def test_config_errors_exit_2(tmp_path: Path, command: str, change: dict[str, Any],
                              message: str) -> None:
    import subprocess

    from tests.support.services import RedisServer

    fake = RedisServer("redis-server", 1, tmp_path)
    cfg = make_config(tmp_path, fake)
    for section, values in change.items():
        if section == "backends":
            cfg["backends"] = values
        else:
            cfg[section].update(values)
    path = write_config(tmp_path, cfg)
    proc = subprocess.run([DOWNLOADER_BIN, command, "-c", str(path)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_version_and_usage() -> None:
    import subprocess

    from pazari import __version__

    out = subprocess.run([DOWNLOADER_BIN, "version"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and out.stdout == f"Downloader Version {__version__}\n"
    bad = subprocess.run([DOWNLOADER_BIN, "nope"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


@pytest.mark.parametrize("purge", [False, True], ids=["dry-run", "purge"])
def test_purge_assets(tmp_path: Path, purge: bool) -> None:
    import subprocess

    (tmp_path / "6QE").mkdir()
    kept = tmp_path / "6QE" / "6QEywYsd0jrKAg"
    kept.write_bytes(b"x")
    (tmp_path / "abc").mkdir()
    other = tmp_path / "abc" / "abcdefghijklmn"
    other.write_bytes(b"y")
    log = "\n".join([
        '1.2.3.4 - - [x] "GET /assets/6QE/6QEywYsd0jrKAg HTTP/1.1" 200 1 "-" "ua"',
        '1.2.3.4 - - [x] "GET /assets/abc/abcdefghijklmn HTTP/1.1" 404 1 "-" "ua"',
        '1.2.3.4 - - [x] "GET /assets/zzz/zzzmissing HTTP/1.1" 200 1 "-" "ua"',
        "garbage",
    ]) + "\n"
    env = {**os.environ, "ASSETS_PATH": str(tmp_path)}
    argv = [DOWNLOADER_BIN, "purge-assets"] + (["--purge"] if purge else [])
    out = subprocess.run(argv, input=log, capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{kept}\n"
    assert kept.exists() != purge
    assert other.exists() and (tmp_path / "6QE").is_dir()
    no_env = subprocess.run([DOWNLOADER_BIN, "purge-assets"], input=log, capture_output=True,
                            text=True, env={k: v for k, v in os.environ.items()
                                            if k != "ASSETS_PATH"}, timeout=30)
    assert no_env.returncode == 2 and "ASSETS_PATH" in no_env.stderr


def test_api_through_redis_sentinel(daemon_factory: Any, redis_server: Any,
                                    tmp_path: Path) -> None:
    """``redis.sentinel`` + ``redis.master_name``: the api finds the master via Sentinel."""
    import subprocess
    import urllib.request

    from tests.support.ports import free_port, wait_for

    sport = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sport}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor pz 127.0.0.1 {redis_server.port} 1\n")
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cfg = make_config(tmp_path, redis_server)
        cfg["redis"] = {"addr": "127.0.0.1:1", "sentinel": [f"127.0.0.1:{sport}"],
                        "master_name": "pz"}
        path = write_config(tmp_path, cfg)
        port = free_port()
        daemon_factory([DOWNLOADER_BIN, "api", "-c", str(path), "--host", "127.0.0.1",
                        "-p", str(port)])
        body = json.dumps({"url": "http://x/y", "aggr_id": "s", "aggr_limit": 1,
                           "callback_url": "http://x/cb"}).encode()

        def post() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/download", body,
                                            timeout=5) as resp:
                    return bool(resp.status == 201)
            except OSError:
                return False

        wait_for(post, 30, "a job enqueued through Sentinel")
        r = redis.Redis(port=redis_server.port)
        try:
            assert r.zcard("jobs:s") >= 1
        finally:
            r.close()
    finally:
        sentinel.terminate()
        sentinel.wait(10)


def _queue_callback(r: redis.Redis, stack: Stack, job_id: str, fields: dict[str, str],
                    score: int) -> None:
    """A downloaded job written to Redis and queued for its callback as the processor
    would, with ``fields`` overriding its hash fields."""
    job = Job(id=job_id, url="http://127.0.0.1:1/x", aggr_id="u", download_state="Success",
              callback_state="Pending", callback_url=stack.receiver.url,
              callback_type="http", callback_dst=stack.receiver.url,
              download_url="http://localhost/assets")
    r.hset(f"job:{job_id}", mapping={**encode_job(job), **fields})
    r.zadd("CallbackQueue", {job_id: score})


# Jobs written to Redis directly (as another client or an older api could) that make the
# delivery raise something no handler anticipates: (name, fields, expected CallbackMeta).
UNEXPECTED: list[tuple[str, dict[str, str], str]] = [
    # The payload's download_url is built from DownloadURL: urlsplit raises.
    ("download-url-broken-ipv6", {"DownloadURL": "http://[::1"},
     "Error while delivering callback, ValueError: Invalid IPv6 URL"),
    # The environment proxy is looked up for the callback URL: urlsplit raises.
    ("callback-url-broken-ipv6-with-env-proxy", {"CallbackURL": "http://[::1/cb",
                                                 "CallbackDst": "http://[::1/cb"},
     "Error while delivering callback, ValueError: Invalid IPv6 URL"),
]


async def test_unexpected_exception_fails_the_callback(stack: Stack,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 11: any exception while delivering fails that callback, not retriably, with
    CallbackMeta naming it; it never stays in CallbacksInFlight to be reclaimed forever, and
    the notifier keeps delivering the others (a good job queued behind them)."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    await stack.start(components=("notifier",), notifier={"max_attempts": 5})
    r = _r(stack)
    try:
        ids = {name: f"Unexpected{i:04d}" for i, (name, _, _) in enumerate(UNEXPECTED)}
        for name, fields, _ in UNEXPECTED:
            _queue_callback(r, stack, ids[name], fields, 1)
        _queue_callback(r, stack, "GoodJob0000001", {}, 2)
        await stack.receiver.wait_for_jobs({"GoodJob0000001"}, timeout=30)

        def settled() -> bool:
            return all(r.hget(f"job:{i}", "CallbackState") == "Failed" for i in ids.values())

        await async_wait_for(settled, 30, "the callbacks to fail")
        wrong = []
        for name, _, meta in UNEXPECTED:
            job = r.hgetall(f"job:{ids[name]}")
            if job["CallbackMeta"] != meta or job["CallbackCount"] != "1":
                wrong.append(f"{name}: {job['CallbackMeta']!r} after "
                             f"{job['CallbackCount']} attempts")
        assert not wrong, "\n".join(wrong)
        for job_id in ids.values():  # settled: neither in flight nor queued again
            assert r.zscore("CallbacksInFlight", job_id) is None
            assert r.zscore("CallbackQueue", job_id) is None
    finally:
        r.close()
    assert not (set(ids.values()) & stack.receiver.by_job.keys())


async def test_undecodable_job_does_not_stop_the_notifier(stack: Stack) -> None:
    """A popped hash the store cannot decode (DownloadTimeout not a number) must not end the
    notifier's only poller: a callback queued after it is still delivered."""
    await stack.start(components=("notifier",))
    r = _r(stack)
    try:
        _queue_callback(r, stack, "Undecodable001", {"DownloadTimeout": "soon"}, 1)
        await async_wait_for(lambda: r.zscore("CallbacksInFlight", "Undecodable001")
                             is not None, 30, "the undecodable job to be popped")
        _queue_callback(r, stack, "GoodJob0000002", {}, 2)
        await stack.receiver.wait_for_jobs({"GoodJob0000002"}, timeout=30)
    finally:
        r.close()
