"""Spec §1 over raw sockets: exact reply bytes (RESP2), error texts, protocol errors,
inline commands, pipelining, QUIT and MONITOR."""

from __future__ import annotations

import re
import time

import pytest

from tests.rafka.conftest import Rafka, encode

# (request, exact reply) on a fresh, unnamed connection without consumer or producer.
EXACT: list[object] = [
    pytest.param(["PING"], b"+PONG\r\n", id="ping"),
    pytest.param(["ping", "x", "y"], b"+PONG\r\n", id="ping-args-ignored"),
    pytest.param(["SET", "a", "b"], b"-Command not supported: SET\r\n", id="set"),
    pytest.param(["lpush", "a", "b"], b"-Command not supported: LPUSH\r\n", id="lowercase"),
    pytest.param(["CLIENT", "kill"], b"-Command not supported: KILL\r\n", id="client-other"),
    pytest.param(["CLIENT"], b"-Command not supported: \r\n", id="client-empty"),
    pytest.param(["CLIENT", "SETNAME", "nocolon"], b"-CONS Cannot parse group.id\r\n",
                 id="setname-no-colon"),
    pytest.param(["HGETALL", "foo"], b"-ERR Expected key to be 'stats', got FOO\r\n",
                 id="hgetall-key"),
    pytest.param(["DEL", "bar"], b"-ERR Expected key to be 'stats', got BAR\r\n", id="del-key"),
    pytest.param(["KEYS", "*"], b"-ERR Expected argument to be 'topics:', got *\r\n",
                 id="keys-arg"),
    pytest.param(["KEYS", "topics"], b"-ERR Expected argument to be 'topics:', got topics\r\n",
                 id="keys-no-colon"),
    pytest.param(["MONITOR", "x"], b"-ERR command 'monitor' does not accept any extra "
                 b"arguments\r\n", id="monitor-args"),
    pytest.param(["RPUSH", "foo", "t:0:1"], b"-CONS You can only RPUSH to the 'acks' key\r\n",
                 id="rpush-key"),
    pytest.param(["RPUSH", "acks", "nope"], b"-CONS Cannot parse ack: 'nope'\r\n",
                 id="ack-parts"),
    pytest.param(["RPUSH", "acks", "t:1"], b"-CONS Cannot parse ack: 't:1'\r\n",
                 id="ack-two-parts"),
    pytest.param(["RPUSH", "acks", "t:foo:1"],
                 b'-CONS strconv.ParseInt: parsing "foo": invalid syntax\r\n', id="ack-part-nan"),
    pytest.param(["RPUSH", "acks", "t:2147483648:1"],
                 b'-CONS strconv.ParseInt: parsing "2147483648": value out of range\r\n',
                 id="ack-part-range"),
    pytest.param(["RPUSH", "acks", "t:0x1:1"],
                 b'-CONS strconv.ParseInt: parsing "0x1": invalid syntax\r\n',
                 id="ack-part-base10"),
    pytest.param(["RPUSH", "acks", "t:0:bar"],
                 b'-CONS strconv.ParseInt: parsing "bar": invalid syntax\r\n', id="ack-off-nan"),
    pytest.param(["RPUSH", "acks", "t:0:9223372036854775808"],
                 b'-CONS strconv.ParseInt: parsing "9223372036854775808": value out of range\r\n',
                 id="ack-off-range"),
    pytest.param(["RPUSH", "acks", "t:0:08"],
                 b'-CONS strconv.ParseInt: parsing "08": invalid syntax\r\n', id="ack-off-octal"),
    pytest.param(["RPUSHX", "topics:t"], b"-PROD RPUSHX accepts 2 arguments, got 1\r\n",
                 id="rpushx-1-arg"),
    pytest.param(["RPUSHX", "topics:t", "a", "b"], b"-PROD RPUSHX accepts 2 arguments, got 3\r\n",
                 id="rpushx-3-args"),
    pytest.param(["RPUSHX", "topics", "v"], b"-PROD First argument must be in the form of "
                 b"'topics:<topic>' or 'topics:<topic>:<key>'\r\n", id="rpushx-1-part"),
    pytest.param(["RPUSHX", "topics:t:k:x", "v"], b"-PROD First argument must be in the form "
                 b"of 'topics:<topic>' or 'topics:<topic>:<key>'\r\n", id="rpushx-4-parts"),
    pytest.param(["DUMP"], b":0\r\n", id="dump-no-producer-no-args"),
    pytest.param(["DUMP", "x", "y"], b":0\r\n", id="dump-no-producer-bad-args"),
    pytest.param(["BLPOP", "foo", "1"], b"-CONS Cannot parse topics from `foo`\r\n",
                 id="blpop-no-colon"),
    pytest.param(["BLPOP", "topic:foo", "1"], b"-CONS Cannot parse topics from `topic:foo`\r\n",
                 id="blpop-wrong-prefix"),
    pytest.param(["BLPOP", "topics:t:{bad", "1"], b"-CONS Error parsing configuration from "
                 b"'{bad'; invalid character 'b' looking for beginning of object key string\r\n",
                 id="blpop-bad-json"),
    *(pytest.param(["BLPOP", f"topics:t:{doc}", "1"], b"-CONS Error parsing configuration from "
                   b"'%s'; json: cannot unmarshal %s into Go value of type "
                   b"kafka.ConfigMap\r\n" % (doc.encode(), kind), id=f"blpop-json-{kind}")
      for doc, kind in (("[1]", b"array"), ('"s"', b"string"), ("5", b"number"),
                        ("true", b"bool"))),
    pytest.param(["BLPOP", "topics:t:null", "1"], b"-CONS Connection not ready. Identify "
                 b"yourself using `CLIENT SETNAME` first\r\n", id="blpop-json-null-is-empty"),
    pytest.param(["BLPOP", "topics:t", "1"], b"-CONS Connection not ready. Identify yourself "
                 b"using `CLIENT SETNAME` first\r\n", id="blpop-unnamed"),
    pytest.param(["HGETALL", "STATS"], b"*6\r\n$27\r\nproducer.unflushed.messages\r\n$",
                 id="hgetall-stats"),
    pytest.param(["DEL", "Stats"], b":1\r\n", id="del-stats"),
]


@pytest.mark.parametrize(("request_", "reply"), EXACT)
def test_exact_reply(rafka: Rafka, request_: list[str], reply: bytes) -> None:
    raw = rafka.raw()
    got = raw.call(*request_)
    if reply.endswith(b"\r\n"):
        assert got == reply
    else:
        assert got.startswith(reply), got
    assert raw.call("PING") == b"+PONG\r\n"  # the connection stays usable


def test_ack_without_consumer_names_the_client(rafka: Rafka) -> None:
    raw = rafka.raw()
    peer = raw.peer
    assert raw.call("CLIENT", "GETNAME") == b"$%d\r\n%s\r\n" % (len(peer), peer.encode())
    # base 0 for the offset: hex is accepted, then there is no consumer.
    assert raw.call("RPUSH", "acks", "t:0:0x1f") == (
        b"-CONS No consumer registered for Client %s\r\n" % peer.encode()
    )


def test_client_setname_rules(rafka: Rafka) -> None:
    one, two = rafka.raw(), rafka.raw()
    name = f"grp:{time.monotonic_ns()}"
    assert one.call("CLIENT", "SETNAME", name) == b"$2\r\nOK\r\n"
    assert one.call("client", "getname") == b"$%d\r\n%s\r\n" % (len(name), name.encode())
    taken = b"-CONS id %s is already taken\r\n" % name.encode()
    assert two.call("CLIENT", "SETNAME", name) == taken
    assert one.call("CLIENT", "SETNAME", name) == taken  # own id counts as taken too
    assert one.call("CLIENT", "SETNAME", name + "x") == (
        b"-CONS Client ID is already set to %s\r\n" % name.encode()
    )
    # An unnamed connection's remote address is an id as well.
    three = rafka.raw()
    assert three.call("PING") == b"+PONG\r\n"  # accepted by the server by now
    peer = three.peer
    assert two.call("CLIENT", "SETNAME", peer) == b"-CONS id %s is already taken\r\n" % (
        peer.encode()
    )


def test_quit_releases_the_id_before_replying(rafka: Rafka) -> None:
    name = f"grp:quit-{time.monotonic_ns()}"
    raw = rafka.raw()
    assert raw.call("CLIENT", "SETNAME", name) == b"$2\r\nOK\r\n"
    for _ in range(3):
        raw.cmd("QUIT")
        # The reply is a bulk OK; by then the id is free: reclaim it at once, before the
        # old connection is even seen closed (a reconnecting rafka-rb client does this).
        assert raw.read_reply() == b"$2\r\nOK\r\n"
        new = rafka.raw()
        assert new.call("CLIENT", "SETNAME", name) == b"$2\r\nOK\r\n"
        assert raw.read_until_closed() == b""
        raw = new


def test_disconnect_releases_the_id(rafka: Rafka) -> None:
    name = f"grp:gone-{time.monotonic_ns()}"
    raw = rafka.raw()
    assert raw.call("CLIENT", "SETNAME", name) == b"$2\r\nOK\r\n"
    raw.close()
    other = rafka.raw()

    def reclaimed() -> bool:
        return other.call("CLIENT", "SETNAME", name) == b"$2\r\nOK\r\n"

    deadline = time.monotonic() + 10
    while not reclaimed():
        assert time.monotonic() < deadline


def test_null_array_request_gets_an_error_and_the_server_keeps_serving(rafka: Rafka) -> None:
    raw, other = rafka.raw(), rafka.raw()
    raw.send(b"*-1\r\n")
    assert raw.read_reply().startswith(b"-")
    assert raw.call("PING") == b"+PONG\r\n"
    raw.send(b"*0\r\n")
    assert raw.read_reply().startswith(b"-")
    assert other.call("PING") == b"+PONG\r\n"


PROTOCOL_ERRORS: list[object] = [
    pytest.param(b"*abc\r\n", b"-Expect Number\r\n", id="count-nan"),
    pytest.param(b"*1\r\n$x\r\n", b"-Expect Number\r\n", id="size-nan"),
    pytest.param(b"*1\r\n$3\r\nabcX\r\n", b"-Expect Newline\r\n", id="no-crlf-after-bulk"),
    pytest.param(b"*1\r\n:3\r\n", b"-Expect TypeChar\r\n", id="not-a-bulk"),
    pytest.param(b"*21\r\n", b"-TooManyArg\r\n", id="too-many-args"),
    pytest.param(b"*-2\r\n", b"-TooManyArg\r\n", id="count-below-minus-1"),
    pytest.param(b"*1\r\n$32768001\r\n", b"-Invalid bulk size\r\n", id="bulk-too-big"),
    # Over the 1,024-byte inline limit, and small enough that the server has read it all when
    # it closes: 70 KB left data unread, and the close became a RST instead of the reply.
    pytest.param(b"x" * 4000, b"-LineTooLong\r\n", id="inline-too-long"),
]


@pytest.mark.parametrize(("data", "reply"), PROTOCOL_ERRORS)
def test_protocol_error_closes_only_that_connection(
    rafka: Rafka, data: bytes, reply: bytes
) -> None:
    bad, good = rafka.raw(), rafka.raw()
    assert good.call("PING") == b"+PONG\r\n"
    bad.send(b"PING\r\n" + data)
    assert bad.read_until_closed() == b"+PONG\r\n" + reply
    assert good.call("PING") == b"+PONG\r\n"


def test_max_size_bulk_is_accepted(rafka: Rafka) -> None:
    raw = rafka.raw()
    big = b"v" * 32_768_000
    raw.send(encode("CLIENT", "SETNAME", big))
    assert raw.read_reply() == b"-CONS Cannot parse group.id\r\n"


def test_inline_commands(rafka: Rafka) -> None:
    raw = rafka.raw()
    raw.send(b"PING\r\n")
    assert raw.read_reply() == b"+PONG\r\n"
    raw.send(b"hgetall   foo\n")  # repeated spaces collapse; a bare LF ends the line
    assert raw.read_reply() == b"-ERR Expected key to be 'stats', got FOO\r\n"
    raw.send(b"\r\nCLIENT SETNAME inl:one\r\n")
    assert raw.read_reply() == b"$2\r\nOK\r\n"


def test_pipelining_preserves_order_across_split_writes(rafka: Rafka) -> None:
    raw = rafka.raw()
    stream = b"".join(
        encode("PING") + encode("DEL", "x") + encode("CLIENT", "GETNAME") for _ in range(200)
    )
    # Split mid-frame at an awkward place, as TCP may.
    raw.send(stream[:1001])
    time.sleep(0.05)
    raw.send(stream[1001:])
    peer = raw.peer.encode()
    expected = (
        b"+PONG\r\n" + b"-ERR Expected key to be 'stats', got X\r\n"
        + b"$%d\r\n%s\r\n" % (len(peer), peer)
    ) * 200
    got = b""
    while len(got) < len(expected):
        got += raw.read_reply()
    assert got == expected


def test_pipeline_behind_a_blocking_command(rafka: Rafka) -> None:
    """Commands after a BLPOP wait for its reply, then run in order."""
    raw = rafka.raw()
    raw.call("CLIENT", "SETNAME", f"pipe:{time.monotonic_ns()}")
    topic = f"t-pipe-{time.monotonic_ns()}"
    raw.send(encode("BLPOP", f"topics:{topic}", "0.2") + encode("PING") + encode("DEL", "stats"))
    assert raw.read_reply() == b"*-1\r\n"
    assert raw.read_reply() == b"+PONG\r\n"
    assert raw.read_reply() == b":1\r\n"


def test_monitor_streams_commands_with_the_senders_id(rafka: Rafka) -> None:
    mon, sender = rafka.raw(), rafka.raw()
    assert mon.call("MONITOR") == b"+OK\r\n"
    name = f"mon:{time.monotonic_ns()}"
    sender.call("CLIENT", "SETNAME", name)
    sender.call("hgetall", "stats")
    peer = sender.peer
    first = mon.read_reply().decode()
    second = mon.read_reply().decode()
    assert re.fullmatch(
        rf'\+\d+\.\d{{6}} \[0 {re.escape(peer)}\] "CLIENT" "SETNAME" "{name}"\r\n', first
    ), first
    assert re.fullmatch(rf'\+\d+\.\d{{6}} \[0 {name}\] "HGETALL" "stats"\r\n', second), second
    # The monitor can still send commands; they are streamed back too.
    mon.cmd("PING")
    line, pong = mon.read_reply(), mon.read_reply()
    if line == b"+PONG\r\n":
        line, pong = pong, line
    assert pong == b"+PONG\r\n"
    assert b'"PING"' in line
