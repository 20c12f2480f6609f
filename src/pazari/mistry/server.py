"""mistryd's HTTP API (spec §2), wire-compatible with the original, with its defects fixed:
unknown jobs/projects are 404 (not 500), invalid names and malformed JSON 400; plus
``/artifacts`` (the http transport), ``DELETE /job`` (cancel), token auth (Bearer or
Basic) for writes and, unless ``public_read``, reads, and a paginated in-memory
``/index/``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import tarfile
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pazari.mistry.artifacts import ArtifactsError, ChunkPipe, open_artifacts, stream_tar
from pazari.mistry.buildinfo import BuildInfo
from pazari.mistry.job import (
    BacklogFull,
    BadRequest,
    JobError,
    JobRequest,
    ShuttingDown,
    UnknownProject,
)
from pazari.mistry.names import InvalidName, check_job_id, check_project
from pazari.mistry.store import read_build_info, read_log
from pazari.mistry.web import render_index, render_job
from pazari.mistry.worker import Scheduler
from pazari.runtime.logs import get_logger
from pazari.runtime.metrics import debug_vars

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEEPALIVE = 15.0
HEALTH_PATH = "/healthz"
OPEN_PATHS = frozenset({"/metrics", HEALTH_PATH})


def text_error(status: int, message: str) -> web.Response:
    """Go's http.Error: text/plain, trailing newline."""
    body = message + "\n" if message else ""
    return web.Response(
        status=status,
        text=body,
        content_type="text/plain",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def json_response(
    doc: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def wants_json(request: web.Request) -> bool:
    # The original looked at Content-Type only (spec §2); Accept is honoured as well.
    ctype = request.headers.get("Content-Type", "")
    return "application/json" in ctype or "application/json" in request.headers.get("Accept", "")


def go_repr(doc: Any) -> str:
    """The request as the original printed it with %v: ``{foo map[k:v] group false}``."""
    if not isinstance(doc, dict):
        return str(doc)
    low = {str(k).lower(): v for k, v in doc.items()}
    params = low.get("params") if isinstance(low.get("params"), dict) else {}
    pairs = " ".join(f"{k}:{v}" for k, v in sorted((params or {}).items()))
    rebuild = "true" if low.get("rebuild") is True else "false"
    return f"{{{low.get('project') or ''} map[{pairs}] {low.get('group') or ''} {rebuild}}}"


class Api:
    def __init__(
        self,
        scheduler: Scheduler,
        auth_token: str,
        service_vars: Callable[[], Any],
        public_read: bool = False,
    ) -> None:
        self.scheduler = scheduler
        self.layout = scheduler.layout
        self.index = scheduler.builder.index
        self.metrics = scheduler.metrics
        self.auth_token = auth_token.encode()
        self.public_read = public_read
        self.service_vars = service_vars
        self.registry: Any = None
        self.closing = asyncio.Event()
        self.log = get_logger("mistry.http")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self.read_auth])
        app.add_routes(
            [
                web.post("/jobs", self.auth(self.post_job)),
                web.route("*", "/jobs", self.method_not_allowed),
                web.get("/index", self.redirect_index),
                web.get("/index/", self.get_index),
                web.get("/job/{project}/{id}", self.get_job),
                web.delete("/job/{project}/{id}", self.auth(self.delete_job)),
                web.get("/log/{project}/{id}", self.get_log),
                web.get("/artifacts/{project}/{id}", self.get_artifacts),
                web.get("/metrics", self.get_metrics),
                web.get(HEALTH_PATH, self.get_health),
                web.get("/debug/vars", self.get_vars),
                web.get("/", self.get_home),
                web.get("/index.html", self.get_home),
            ]
        )
        return app

    def auth(self, handler: Handler) -> Handler:
        """Writes (POST /jobs, DELETE /job) need the token whenever one is set."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.auth_token and not self.authorized(request):
                return self.unauthorized()
            return await handler(request)

        return guarded

    @web.middleware
    async def read_auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With a token set, reads need it too (issue 10: job pages, /index/, /log/,
        /artifacts/ and the web view showed every build's params and files to anyone);
        ``public_read`` opens them again. /metrics and the health path stay open for
        scrapers and probes."""
        if (
            self.auth_token
            and not self.public_read
            and request.path not in OPEN_PATHS
            and not self.authorized(request)
        ):
            return self.unauthorized()
        return await handler(request)

    def authorized(self, request: web.Request) -> bool:
        """``Authorization: Bearer <token>``, or HTTP Basic with the token as password (any
        user name) so that a browser can open the web view; compared in constant time."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        credentials = credentials.strip()
        scheme = scheme.lower()
        if scheme == "bearer":
            given = credentials.encode()
        elif scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            given = decoded.partition(b":")[2]
        else:
            return False
        return hmac.compare_digest(given, self.auth_token)

    @staticmethod
    def unauthorized() -> web.Response:
        resp = text_error(401, "Unauthorized")
        # RFC 9110 §11.6.1: one challenge per scheme accepted.
        resp.headers.add("WWW-Authenticate", 'Bearer realm="mistry"')
        resp.headers.add("WWW-Authenticate", 'Basic realm="mistry", charset="UTF-8"')
        return resp

    async def get_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", content_type="text/plain")

    async def method_not_allowed(self, request: web.Request) -> web.Response:
        return text_error(405, f"Expected POST, got {request.method}")

    async def redirect_index(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/index/")

    # -- jobs ----------------------------------------------------------------------------

    async def post_job(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            text = body.decode(errors="replace")
            return text_error(400, f"Error unmarshalling body '{text}' to Job: {exc}")
        try:
            job_request = JobRequest.from_doc(doc)
        except (BadRequest, InvalidName) as exc:
            return text_error(400, f"Error creating new job {go_repr(doc)}: {exc}")
        wait = "async" not in request.query
        try:
            jid = self.scheduler.job_id(job_request)
        except UnknownProject as exc:
            return text_error(404, f"Error creating new job {go_repr(doc)}: {exc}")
        name = f"{{project={job_request.project} group={job_request.group} id={jid[:7]}}}"
        try:
            _, info = await self.scheduler.submit(job_request, jid, wait=wait)
        except BacklogFull:
            return web.Response(status=503)
        except ShuttingDown as exc:
            return text_error(503, str(exc))
        except JobError as exc:
            text = f"Error building {name}: {exc}"
            if exc.detail:
                text += f"\n\nImage build output (last lines):\n{exc.detail}"
            return text_error(500, text)
        if info is None:
            return web.Response(status=201)
        return json_response(info.to_json(), status=201)

    def _names(self, request: web.Request) -> tuple[str, str]:
        return (
            check_project(request.match_info["project"]),
            check_job_id(request.match_info["id"]),
        )

    def _existing(self, request: web.Request) -> tuple[str, str, str] | web.Response:
        """(project, id, state) of the job the URL names, or the 400/404 to answer."""
        try:
            project, jid = self._names(request)
        except InvalidName as exc:
            return text_error(400, str(exc))
        state = self.layout.state(project, jid)
        if state is None:
            return text_error(404, f"job {project}/{jid} not found")
        return project, jid, state

    async def get_job(self, request: web.Request) -> web.Response:
        found = self._existing(request)
        if isinstance(found, web.Response):
            return found
        project, jid, state = found
        directory = (self.layout.pending if state == "pending" else self.layout.ready)(project, jid)
        try:
            info = read_build_info(directory)
        except (OSError, ValueError):
            entry = self.index.get(project, jid)
            info = entry.info if entry is not None else BuildInfo(url=f"job/{project}/{jid}")
        log = read_log(directory)
        if wants_json(request):
            info.container_stdouterr = log
            doc = {
                "ID": jid,
                "Project": project,
                "Group": info.group,
                "Params": info.params,
                "StartedAt": info.to_doc()["StartedAt"],
                "State": state,
                "BuildInfo": info.to_doc(),
            }
            return json_response(doc)
        return web.Response(
            text=render_job(project, jid, state, info, log), content_type="text/html"
        )

    async def delete_job(self, request: web.Request) -> web.Response:
        try:
            project, jid = self._names(request)
        except InvalidName as exc:
            return text_error(400, str(exc))
        job = self.scheduler.find(project, jid)
        if job is None:
            if self.layout.state(project, jid) is None:
                return text_error(404, f"job {project}/{jid} not found")
            return text_error(409, f"job {project}/{jid} is not running")
        self.scheduler.abort(job, "cancelled by a DELETE request")
        return json_response({"ID": jid, "Project": project, "State": "cancelled"}, status=202)

    async def get_index(self, request: web.Request) -> web.Response:
        try:
            offset = int(request.query.get("offset", "0"))
            limit_text = request.query.get("limit", "")
            limit = int(limit_text) if limit_text else None
            project = request.query.get("project", "")
            if project:
                check_project(project)
        except (ValueError, InvalidName) as exc:
            return text_error(400, f"bad query: {exc}")
        if offset < 0 or (limit is not None and limit < 0):
            return text_error(400, "offset and limit must not be negative")
        body = self.index.encode_page(offset, limit, project)
        return json_response(body, headers={"X-Total-Count": str(len(self.index))})

    async def get_home(self, request: web.Request) -> web.Response:
        page = render_index(self.index.page(0, 100), len(self.index))
        return web.Response(text=page, content_type="text/html")

    # -- log, artifacts ------------------------------------------------------------------

    async def get_log(self, request: web.Request) -> web.StreamResponse:
        try:
            project, jid = self._names(request)
            offset_text = request.query.get("offset", "")
            offset = int(offset_text) if offset_text else None
        except (InvalidName, ValueError) as exc:
            return text_error(400, str(exc))
        job = self.scheduler.find(project, jid)
        if job is None or job.log is None or job.log.closed:
            if self.layout.state(project, jid) is None:
                return text_error(404, f"job {project}/{jid} not found")
            return web.Response(status=204)
        sub = job.log.subscribe(offset)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "Access-Control-Allow-Origin": "*",
            }
        )
        await resp.prepare(request)
        try:
            while not self.closing.is_set():
                try:
                    line = await asyncio.wait_for(sub.next(), KEEPALIVE)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if line is None:
                    await resp.write(b"event: end\ndata: finished\n\n")
                    break
                await resp.write(b"data: " + line.encode() + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            job.log.unsubscribe(sub)
        return resp

    async def get_artifacts(self, request: web.Request) -> web.StreamResponse:
        """The http transport: the artifacts of a ready build as an uncompressed tar."""
        found = self._existing(request)
        if isinstance(found, web.Response):
            return found
        project, jid, state = found
        if state != "ready":
            return text_error(409, f"job {project}/{jid} is still pending")
        try:
            fd = await asyncio.to_thread(open_artifacts, self.layout.ready(project, jid))
        except ArtifactsError as exc:
            self.log.warning("artifacts of %s/%s: %s", project, jid, exc)
            return text_error(403, f"artifacts of {project}/{jid}: {exc}")
        pipe = ChunkPipe(asyncio.get_running_loop())
        writer = asyncio.create_task(asyncio.to_thread(stream_tar, fd, pipe))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        try:
            # The first chunk (or the end, or the error) before the status line: a tar that
            # fails early is an error answer, not a 200 (issue 10).
            chunk = await self._next_chunk(pipe, writer)
            await resp.prepare(request)
            while chunk is not None:
                await resp.write(chunk)
                chunk = await self._next_chunk(pipe, writer)
            await resp.write_eof()
        except ConnectionResetError:
            # The client went away (a tar reader may stop at the end-of-archive blocks
            # and close before the last chunk): nothing to answer.
            return resp
        except (ArtifactsError, OSError, tarfile.TarError) as exc:
            self.log.warning("artifacts of %s/%s failed: %s", project, jid, exc)
            if not resp.prepared:
                return text_error(500, f"artifacts of {project}/{jid}: {exc}")
            # Streaming has started: break the connection so that the client sees a broken
            # transfer (no last chunk), never a clean end of a truncated tar.
            if request.transport is not None:
                request.transport.abort()
            return resp
        finally:
            pipe.cancel()
            with contextlib.suppress(BaseException):
                await writer
        return resp

    @staticmethod
    async def _next_chunk(pipe: ChunkPipe, writer: asyncio.Task[int]) -> bytes | None:
        """The writer's next chunk; None at the end; its exception if it failed."""
        getter = asyncio.ensure_future(pipe.queue.get())
        try:
            await asyncio.wait([getter, writer], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            getter.cancel()
            raise
        if getter.done():
            return getter.result()
        getter.cancel()
        writer.result()  # raises the writer's error
        if not pipe.queue.empty():
            return pipe.queue.get_nowait()
        raise ArtifactsError("the tar writer stopped without finishing")

    # -- metrics -------------------------------------------------------------------------

    async def get_metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render()
        if self.registry is not None:
            body = generate_latest(self.registry) + body
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_vars(self, request: web.Request) -> web.Response:
        doc = debug_vars(self.service_vars())
        return json_response(orjson.dumps(doc, default=str))
