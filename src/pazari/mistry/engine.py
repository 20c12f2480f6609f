"""A thin Docker Engine API client on aiohttp (spec §5), tested against podman's
Docker-compatible service.

Only what mistry needs: build an image from a tar context, create/attach/start/wait/kill/
remove a container, and list or prune by label. Everything mistry creates carries the
``pazari.mistry`` label so that ``mistryd rebuild`` prunes only its own objects (the
original pruned every stopped container and dangling image on the host, spec §4).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

# API versions (issue 10): a pinned /v1.41 was refused by Docker Engine 29 ("client version
# 1.41 is too old", its minimum is 1.44). As the Docker CLI does, GET /version once and
# speak min(server ApiVersion, NEWEST_API). NEWEST_API is the newest version whose changes
# mistry's requests have been checked against (the build, create, attach, wait, prune and
# list calls used here are unchanged in shape from 1.25 to 1.47); OLDEST_API is the first
# with everything used (label filters on prune, 1.25).
NEWEST_API = "1.47"
OLDEST_API = "1.25"
FALLBACK_API = "1.24"  # what the Docker CLI assumes of a server that reports no version
LABEL = "pazari.mistry"
LABEL_PROJECT = "pazari.mistry.project"
LABEL_JOB = "pazari.mistry.job"
LABEL_BUILD_PATH = "pazari.mistry.build-path"
LABEL_CONTEXT = "pazari.mistry.context"
LABEL_UID = "pazari.mistry.uid"

STDOUT, STDERR = 1, 2


class EngineError(RuntimeError):
    """The engine refused a request or reported an error in a stream."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def default_engine_url() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host or "unix:///var/run/docker.sock"


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        raise EngineError(f"the engine reports an unreadable API version {text!r}") from None


def negotiate(doc: Mapping[str, Any]) -> str:
    """The API version to speak with an engine whose ``GET /version`` returned ``doc``:
    min(its ApiVersion, NEWEST_API). Refuses an engine whose MinAPIVersion is newer than
    NEWEST_API, or whose ApiVersion is older than OLDEST_API."""
    server = str(doc.get("ApiVersion") or FALLBACK_API)
    minimum = str(doc.get("MinAPIVersion") or "")
    if minimum and _version(minimum) > _version(NEWEST_API):
        raise EngineError(
            f"the container engine requires API version {minimum} or newer; mistry speaks "
            f"{OLDEST_API} to {NEWEST_API}"
        )
    chosen = min(server, NEWEST_API, key=_version)
    if _version(chosen) < _version(OLDEST_API):
        raise EngineError(
            f"the container engine speaks API version {server}; mistry needs {OLDEST_API} "
            f"or newer"
        )
    return chosen


class Demuxer:
    """Splits Docker's multiplexed attach stream (8-byte frame headers) incrementally."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= 8:
            size = int.from_bytes(self._buf[4:8], "big")
            if len(self._buf) < 8 + size:
                break
            stream = self._buf[0]
            out.append((STDERR if stream == 2 else STDOUT, bytes(self._buf[8 : 8 + size])))
            del self._buf[: 8 + size]
        return out


@dataclass(frozen=True)
class EngineTLS:
    """TLS to a remote engine as the Docker CLI does it (``--tlsverify --tlscacert
    --tlscert --tlskey``): the engine's certificate is verified against ``ca`` (hostname
    included) and mistryd presents its client certificate."""

    ca: str
    cert: str
    key: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


class Engine:
    def __init__(self, url: str | None = None, tls: EngineTLS | None = None) -> None:
        self.url = url or default_engine_url()
        self.tls = tls
        if self.url.startswith("unix://"):
            self.socket_path: str | None = self.url[len("unix://") :]
            self._base = "http://docker"
        else:
            self.socket_path = None
            # tcp:// with TLS is https (Docker's port 2376); without, plain http (2375).
            scheme = "https://" if tls is not None else "http://"
            self._base = scheme + self.url.removeprefix("tcp://").rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self.api_version = ""  # negotiated on first use
        self._negotiating: asyncio.Lock | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self.socket_path is not None:
                connector = aiohttp.UnixConnector(path=self.socket_path, limit=64)
            else:
                ssl_ctx = self.tls.context() if self.tls is not None else False
                connector = aiohttp.TCPConnector(limit=64, ssl=ssl_ctx)
            self._session = aiohttp.ClientSession(
                connector=connector,
                base_url=self._base,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def prefix(self) -> str:
        """``/v<version>`` negotiated with the engine once (a failure is retried on the
        next call, so mistryd may start before the engine)."""
        if not self.api_version:
            if self._negotiating is None:
                self._negotiating = asyncio.Lock()
            async with self._negotiating:
                if not self.api_version:
                    async with self.session.get("/version") as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise EngineError(_error_text(body, resp.status), resp.status)
                    try:
                        doc = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        doc = None
                    if not isinstance(doc, dict):
                        raise EngineError("GET /version did not return an object")
                    self.api_version = negotiate(doc)
        return f"/v{self.api_version}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        url = await self.prefix() + path
        async with self.session.request(method, url, params=params, json=json) as resp:
            body = await resp.read()
            if resp.status not in ok:
                raise EngineError(_error_text(body, resp.status), resp.status)
            if not body.strip():
                return None
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                return body.decode(errors="replace")

    async def ping(self) -> bool:
        async with self.session.get("/_ping") as resp:
            return resp.status == 200

    # -- images --------------------------------------------------------------------------

    async def build_image(
        self,
        context: bytes,
        tag: str,
        *,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str],
        nocache: bool = False,
        pull: bool = False,
        on_output: Callable[[str], None] | None = None,
    ) -> None:
        """Build ``tag`` from a tar context; progress is rendered as plain text."""
        params = {
            "t": tag,
            "buildargs": orjson.dumps(dict(buildargs)).decode(),
            "labels": orjson.dumps(dict(labels)).decode(),
            "networkmode": "host",
            "forcerm": "1",
            "rm": "1",
            "nocache": "1" if nocache else "0",
            "pull": "1" if pull else "0",
        }
        headers = {"Content-Type": "application/x-tar"}
        error = ""
        async with self.session.post(
            await self.prefix() + "/build", params=params, data=context, headers=headers
        ) as resp:
            if resp.status != 200:
                raise EngineError(_error_text(await resp.read(), resp.status), resp.status)
            async for line in resp.content:
                if not line.strip():
                    continue
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    msg = {"stream": line.decode(errors="replace")}
                if not isinstance(msg, dict):
                    continue
                if msg.get("error") or msg.get("errorDetail"):
                    detail = msg.get("errorDetail") or {}
                    error = str(msg.get("error") or detail.get("message") or "build failed")
                    if on_output is not None:
                        on_output(error.rstrip("\n") + "\n")
                    continue
                text = msg.get("stream") or msg.get("status") or ""
                if text and on_output is not None:
                    on_output(str(text))
        if error:
            raise EngineError(error.strip())
        # A stream can end without an error line on a failed build; the image must exist.
        await self.inspect_image(tag)

    async def inspect_image(self, name: str) -> dict[str, Any]:
        doc = await self._call("GET", f"/images/{name}/json")
        return dict(doc)

    async def remove_image(self, name: str) -> None:
        await self._call("DELETE", f"/images/{name}", params={"force": "1"}, ok=(200, 404))

    async def prune_images(self, label: str = LABEL) -> dict[str, Any]:
        filters = orjson.dumps({"label": [label], "dangling": ["true"]}).decode()
        doc = await self._call("POST", "/images/prune", params={"filters": filters})
        return dict(doc or {})

    # -- containers ----------------------------------------------------------------------

    async def create_container(self, name: str, spec: Mapping[str, Any]) -> str:
        doc = await self._call("POST", "/containers/create", params={"name": name}, json=spec)
        return str(doc["Id"])

    async def attach(self, container: str) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, chunk) pairs until the container's output closes. The request is sent
        before the generator is first advanced, so attach before ``start``."""
        params = {"stream": "1", "stdout": "1", "stderr": "1", "logs": "1"}
        url = await self.prefix() + f"/containers/{container}/attach"
        resp = await self.session.post(url, params=params)
        return self._frames(resp)

    async def _frames(self, resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[int, bytes]]:
        try:
            if resp.status != 200:
                raise EngineError(_error_text(await resp.read(), resp.status), resp.status)
            demux = Demuxer()
            async for chunk in resp.content.iter_any():
                for frame in demux.feed(chunk):
                    yield frame
        finally:
            resp.release()

    async def start(self, container: str) -> None:
        await self._call("POST", f"/containers/{container}/start", ok=(204, 304))

    async def wait(self, container: str) -> int:
        doc = await self._call("POST", f"/containers/{container}/wait")
        return int(doc["StatusCode"])

    async def kill(self, container: str) -> None:
        await self._call("POST", f"/containers/{container}/kill", ok=(204, 404, 409, 500))

    async def remove(self, container: str) -> None:
        await self._call(
            "DELETE", f"/containers/{container}", params={"force": "1"}, ok=(200, 204, 404)
        )

    async def containers(self, labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        wanted = [f"{k}={v}" if v else k for k, v in (labels or {LABEL: ""}).items()]
        filters = orjson.dumps({"label": wanted}).decode()
        doc = await self._call("GET", "/containers/json", params={"all": "1", "filters": filters})
        return list(doc or [])

    async def prune_containers(self, label: str = LABEL) -> dict[str, Any]:
        filters = orjson.dumps({"label": [label]}).decode()
        doc = await self._call("POST", "/containers/prune", params={"filters": filters})
        return dict(doc or {})


class Engines:
    """Several engines, each project routed to one by rendezvous hashing (issue 16): the
    project's builds, and so its image and layer cache, stay warm on one engine (the idea
    of buildx's sticky ``loadbalance``), and adding or removing an engine moves only the
    projects that hashed to it. One engine is the common case and costs nothing."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("at least one engine is needed")
        self.engines = list(engines)

    def for_project(self, project: str) -> Engine:
        if len(self.engines) == 1:
            return self.engines[0]
        return max(self.engines, key=lambda e: hashlib.sha256(
            f"{e.url}\0{project}".encode()).digest())

    def __iter__(self) -> Iterator[Engine]:
        return iter(self.engines)

    async def close(self) -> None:
        for engine in self.engines:
            await engine.close()


def _error_text(body: bytes, status: int) -> str:
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict):
            return str(doc.get("message") or doc.get("cause") or body.decode())
    except orjson.JSONDecodeError:
        pass
    return body.decode(errors="replace").strip() or f"HTTP {status}"
