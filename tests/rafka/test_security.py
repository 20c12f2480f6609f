"""Optional AUTH and TLS on the RESP listener (beyond the original: config `"rafka"`
section `password`, `tls_cert`, `tls_key`)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.rafka.conftest import StartRafka, encode, tls_context_unverified
from tests.support.services import KafkaBroker, consume_all, require_binary

NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


def test_auth(start_rafka: StartRafka) -> None:
    server = start_rafka({"password": "s3cret"})
    raw = server.raw()
    for command in (("PING",), ("CLIENT", "SETNAME", "g:a"), ("RPUSHX", "topics:t", "v"),
                    ("HGETALL", "stats"), ("BLPOP", "topics:t", "1")):
        assert raw.call(*command) == NOAUTH
    assert raw.call("AUTH", "wrong") == WRONGPASS
    assert raw.call("PING") == NOAUTH
    assert raw.call("AUTH") == b"-ERR wrong number of arguments for 'auth' command\r\n"
    assert raw.call("AUTH", "default", "s3cret") == b"+OK\r\n"
    assert raw.call("PING") == b"+PONG\r\n"
    # HELLO with AUTH authenticates and switches protocol at once.
    other = server.raw()
    assert other.call("HELLO", "3").startswith(b"-NOAUTH HELLO must be called")
    assert other.call("HELLO", "3", "AUTH", "default", "nope") == WRONGPASS
    assert other.call("HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "g:b").startswith(
        b"%7\r\n"
    )
    assert other.call("CLIENT", "GETNAME") == b"$3\r\ng:b\r\n"
    # QUIT works unauthenticated.
    third = server.raw()
    assert third.call("QUIT") == b"$2\r\nOK\r\n"


def test_auth_with_redis_py_clients(start_rafka: StartRafka) -> None:
    server = start_rafka({"password": "pw"})
    # redis-py retries a failed connect with backoff (against redis-server too): not here.
    no_retry = Retry(NoBackoff(), 0)
    for protocol in (2, 3):
        assert server.redis(protocol=protocol).ping() is True
        for password in ("bad", None):
            with pytest.raises(redis.AuthenticationError):
                server.redis(protocol=protocol, password=password, retry=no_retry).ping()


def test_auth_not_configured(start_rafka: StartRafka) -> None:
    server = start_rafka()
    raw = server.raw()
    assert raw.call("AUTH", "x").startswith(b"-ERR AUTH <password> called without any password")
    assert raw.call("PING") == b"+PONG\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = require_binary("openssl", "apt-get install -y openssl")
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls(
    start_rafka: StartRafka,
    certificate: tuple[Path, Path],
    kafka_broker: KafkaBroker,
    kafka_topic: str,
) -> None:
    cert, key = certificate
    server = start_rafka({"tls_cert": str(cert), "tls_key": str(key), "password": "tlspw"})
    for protocol in (2, 3):
        client = server.redis(protocol=protocol)
        assert client.ping() is True
        assert client.rpushx(f"topics:{kafka_topic}", f"over-tls-{protocol}") == 1
        assert client.execute_command("DUMP", 10000) == 0
    records = consume_all(kafka_broker.bootstrap, kafka_topic, 2)
    assert sorted(r.value for r in records) == [b"over-tls-2", b"over-tls-3"]
    # A plaintext client gets nowhere and does not disturb the server.

    with socket.create_connection((server.host, server.port), timeout=10) as plain:
        plain.sendall(encode("PING"))
        data = b""
        with contextlib.suppress(OSError):  # reset or timeout: either way no reply
            while chunk := plain.recv(100):
                data += chunk
        assert b"PONG" not in data
    ctx = tls_context_unverified()
    with socket.create_connection((server.host, server.port), timeout=10) as sock, \
            ctx.wrap_socket(sock) as tls:
        tls.sendall(encode("AUTH", "tlspw") + encode("PING"))
        data = b""
        while data.count(b"\r\n") < 2:
            data += tls.recv(100)
        assert data == b"+OK\r\n+PONG\r\n"
