"""Run inside the systemd test container with /opt/pazari/bin/python3 (the package's own venv
has aiohttp and redis): the clients and servers the checks need on the container's loopback.

    probe.py http METHOD URL [BODY] [HOST]   one request; prints {"status", "body"}
    probe.py rafka PORT TOPIC VALUE          RPUSHX topics:TOPIC VALUE, then BLPOP it back
    probe.py serve PORT DIR                  GET /file/<name> (bytes), GET /slow/<name>?s=S
                                             (the first request's body dripped over S
                                             seconds), POST /callback/<tag> (each body
                                             appended to DIR/callbacks.jsonl)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def http(method: str, url: str, body: str = "", host: str = "") -> None:
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    request = urllib.request.Request(url, data=body.encode() or None, method=method,
                                     headers=headers)  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            status, data = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    print(json.dumps({"status": status, "body": data.decode(errors="replace")}))


def rafka(port: str, topic: str, value: str) -> None:
    import redis

    producer = redis.Redis(port=int(port), socket_timeout=30)
    assert producer.execute_command("RPUSHX", f"topics:{topic}", value) == 1
    consumer = redis.Redis(port=int(port), socket_timeout=30)
    consumer.execute_command("CLIENT", "SETNAME", "systemd-test:c1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = consumer.execute_command("BLPOP", f"topics:{topic}", 1)
        if reply is not None:
            print(json.dumps({"value": reply[7].decode(), "topic": reply[1].decode()}))
            return
    raise SystemExit("no message within 60s")


def serve(port: str, root: str) -> None:
    from aiohttp import web

    out = Path(root) / "callbacks.jsonl"

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def slow(request: web.Request) -> web.StreamResponse:
        """The first request for a name drips its body over ``s`` seconds (a download in
        flight for that long); a retry of the same name is answered at once."""
        name = request.match_info["name"]
        started = Path(root) / "slow-started.log"
        seen = started.read_text().split() if started.exists() else []
        seconds = 0.0 if name in seen else float(request.query.get("s", "5"))
        with started.open("a") as log:
            log.write(name + "\n")
        response = web.StreamResponse(headers={"Content-Type": "image/png",
                                               "Content-Length": str(len(PNG))})  # fmt: skip
        await response.prepare(request)
        for i in range(len(PNG)):
            await response.write(PNG[i : i + 1])
            await asyncio.sleep(seconds / len(PNG))
        await response.write_eof()
        return response

    async def callback(request: web.Request) -> web.Response:
        body = await request.read()
        with out.open("ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.get("/file/{name}", file), web.get("/slow/{name}", slow),
                    web.post("/callback/{tag}", callback)])  # fmt: skip
    web.run_app(app, host="127.0.0.1", port=int(port), print=None)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"http": http, "rafka": rafka, "serve": serve}[command](*args)
