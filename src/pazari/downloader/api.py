"""``downloader api`` (spec §1): enqueue jobs, retry failed callbacks, health, stats and the
dashboard. Errors are written the way Go's ``http.Error`` writes them."""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from pazari.downloader import validate
from pazari.downloader.config import Config
from pazari.downloader.intake import IntakeServer
from pazari.downloader.job import FAILED, new_job_id
from pazari.downloader.redisconn import connect_config
from pazari.downloader.store import Store
from pazari.runtime import Service, get_logger, metrics_routes

log = get_logger("downloader.api")

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
ID_TRIES = 3
STOP_ANSWER_TIMEOUT = 10.0  # graceful stop: the fast path's requests already read
#: The body limit of the api's aiohttp app; the fast path (intake.py) hands larger bodies over.
CLIENT_MAX_SIZE = 16 << 20
#: Go's ``http.Error`` headers, in the order aiohttp writes them.
ERROR_HEADERS = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
#: Quirk kept: Go sniffed the 201's type because it was set after WriteHeader.
CREATED_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}


def go_error(message: str, status: int) -> web.Response:
    """Go's ``http.Error``: text/plain, nosniff, message + newline."""
    return web.Response(status=status, body=_go_error_body(message), headers=ERROR_HEADERS)


def _go_error_body(message: str) -> bytes:
    return (message + "\n").encode()


def download_headers(status: int) -> Mapping[str, str]:
    """The headers of a ``POST /download`` answer of ``status`` (before Content-Length)."""
    return CREATED_HEADERS if status == 201 else ERROR_HEADERS


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": "application/json",
                                            "Access-Control-Allow-Origin": "*"})


def go_path_base(p: str) -> str:
    """Go ``path.Base``."""
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p.rsplit("/", 1)[-1]


class Api:
    def __init__(self, store: Store, heartbeat_path: str) -> None:
        self.store = store
        self.heartbeat_path = heartbeat_path
        self.enqueued = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/download", self.download),
            web.route("*", "/retry/{tail:.*}", self.retry),
            web.route("*", "/hb", self.heartbeat),
            web.route("*", "/stats/{tail:.*}", self.stats),
            web.route("*", "/dashboard/aggregations", self.aggregations),
            web.route("*", "/{path:.*}", self.static),
        ]

    async def download(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return go_error("Invalid request method", 405)
        try:
            raw = await request.read()
        except Exception as exc:
            return go_error(f"Error reading request body: {exc}", 400)
        status, body = await self.submit(raw)
        return web.Response(status=status, body=body, headers=download_headers(status))

    async def submit(self, raw: bytes) -> tuple[int, bytes]:
        """A ``POST /download`` body → (status, response body): validate, enqueue. The one
        decision shared by the aiohttp handler and the fast path (intake.py)."""
        try:
            doc = validate.decode_body(raw)
            job = validate.parse_job(doc)
        except validate.Invalid as exc:
            body = raw.decode(errors="replace")
            return 400, _go_error_body(f"Error unmarshalling body '{body}' to Job: {exc}")
        try:
            aggr = validate.parse_aggregation(doc)
        except validate.Invalid as exc:
            body = raw.decode(errors="replace")
            return 400, _go_error_body(
                f"Error unmarshalling body '{body}' to Aggregation: {exc}")
        # The uniqueness check is part of the enqueue script (one round trip, batched with
        # the concurrent requests): a taken id writes nothing and we draw another.
        try:
            for _ in range(ID_TRIES):
                job.id = new_job_id()
                created = await self.store.enqueue_new(job, aggr)
                if created >= 0:
                    break
            else:
                return 500, _go_error_body(
                    f"Could not find unique ID after {ID_TRIES} tries for {job}")
        except RedisError as exc:
            return 500, _go_error_body(f"Error queueing {job}: {exc}")
        self.enqueued += 1
        if log.isEnabledFor(logging.DEBUG):
            if created:
                log.debug("aggregation_save", extra={"aggregation_id": aggr.id,
                                                     "aggregation_limit": aggr.limit})
            log.debug("job_enqueue", extra={"job_id": job.id, "job_url": job.url})
        return 201, b'{"id":"' + job.id.encode() + b'"}'

    async def retry(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return go_error("Invalid request method", 405)
        job_id = go_path_base(request.path)
        try:
            job = await self.store.get_job(job_id)
        except (RedisError, ValueError) as exc:
            return go_error(f"Error fetching {job_id} from Redis: {exc}", 400)
        if job is None:
            return go_error(f"Error fetching {job_id} from Redis: Not Found", 400)
        if job.callback_state != FAILED:
            return go_error(
                f"Error with callback state of the job {job}: {job.callback_state}", 400)
        job.callback_meta = ""
        job.callback_count = 0
        if job.has_callback():
            try:
                await self.store.queue_callback(job)
            except RedisError as exc:
                return go_error(
                    f"Error rescheduling callback for job with id '{job_id}': {exc}", 500)
        return web.Response(status=204)

    async def heartbeat(self, request: web.Request) -> web.Response:
        if self.heartbeat_path and os.path.exists(self.heartbeat_path):
            return go_error(f"Service disabled, '{self.heartbeat_path}' exists!", 503)
        return web.Response(body=b"OK", headers={"Content-Type": "text/plain; charset=utf-8"})

    async def stats(self, request: web.Request) -> web.Response:
        # path.Base(RequestURI): a query string becomes part of the id (quirk, kept).
        component = go_path_base(request.raw_path)
        try:
            value = await self.store.get_stats(component)
        except RedisError as exc:
            return go_error(f"Error fetching stats for entity {component}: {exc}", 500)
        if value is None:
            return go_error(f"Could not find stats for entity {component}", 404)
        return _json(value)

    async def aggregations(self, request: web.Request) -> web.Response:
        try:
            sizes = await self.store.aggregation_sizes()
        except RedisError as exc:
            return go_error(f"Error scanning for aggregation keys: {exc}", 500)
        return _json(orjson.dumps([{"name": n, "size": s} for n, s in sizes]))

    async def static(self, request: web.Request) -> web.StreamResponse:
        rel = posixpath.normpath("/" + request.match_info["path"]).lstrip("/")
        target = DASHBOARD_DIR / (rel or "index.html")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file() or DASHBOARD_DIR not in target.resolve().parents:
            return go_error("404 page not found", 404)
        return web.FileResponse(target)


class ApiService(Service):
    name = "downloader-api"

    def __init__(self, config: Config, host: str, port: int) -> None:
        super().__init__()
        self.config = config
        self.host = host
        self.port = port
        self.client: aioredis.Redis | None = None
        self.runner: web.AppRunner | None = None
        self.intake: IntakeServer | None = None
        self.api: Api | None = None
        self._url = ""

    async def start(self) -> None:
        self.client = connect_config(self.config.redis, "api")
        self.api = Api(Store(self.client), self.config.api.heartbeat_path)
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app.add_routes(metrics_routes(self.registry, self.vars))
        app.add_routes(self.api.routes())
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        assert self.runner.server is not None
        # aiohttp's server is not bound to the socket itself: the POST /download fast path
        # owns the listener and hands it every connection that asks for something else.
        self.intake = IntakeServer(self.api.submit, download_headers, self.runner.server,
                                   CLIENT_MAX_SIZE)
        sockets = await self.intake.start(self.host or None, self.port)
        port = sockets[0].getsockname()[1] if sockets else self.port
        self._url = f"http://{self.host or '0.0.0.0'}:{port}"

    async def stop(self) -> None:
        """Stop accepting, answer what was read (fast path, then aiohttp's connections),
        then wait for every batched enqueue: each 201 sent is a job written, and each job
        whose request was read is written even if its answer could not be sent."""
        if self.intake is not None:
            await self.intake.stop(STOP_ANSWER_TIMEOUT)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.api is not None:
            await self.api.store.drain()
        if self.client is not None:
            await self.client.aclose()

    def vars(self) -> Mapping[str, Any]:
        return {"enqueued": self.api.enqueued if self.api else 0}

    def listeners(self) -> Mapping[str, str]:
        return {"api": self._url}
