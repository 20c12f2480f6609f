"""mistry fixtures: real ``mistryd`` daemons against the session's podman engine, and the
real ``mistry`` client binary.

Project Dockerfiles are ``FROM`` the engine's local busybox image (there is no registry);
each project runs a ``build.sh``. Config ``mounts`` give every container ``/probe``, a host
dir where scripts leave evidence (e.g. one line per container run, to count runs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, DaemonFactory
from tests.support.ports import free_port, wait_for
from tests.support.services import DockerEngine

BIN = Path(sys.executable).parent
MISTRYD = str(BIN / "mistryd")
MISTRY = str(BIN / "mistry")

DOCKERFILE = """\
FROM {base}
ARG uid
WORKDIR /data
COPY build.sh /build.sh
CMD ["/bin/sh", "/build.sh"]
"""


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Response:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as resp:
            return Response(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read(), dict(exc.headers))


@dataclass
class Mistry:
    daemon: Daemon
    port: int
    root: Path
    config: dict[str, Any]
    engine: DockerEngine

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def projects(self) -> Path:
        return Path(self.config["projects_path"])

    @property
    def builds(self) -> Path:
        return Path(self.config["build_path"])

    @property
    def probe(self) -> Path:
        return self.root / "probe"

    def project(self, name: str, script: str, dockerfile: str | None = None) -> Path:
        path = self.projects / name
        path.mkdir(parents=True, exist_ok=True)
        text = dockerfile if dockerfile is not None else DOCKERFILE
        (path / "Dockerfile").write_text(text.format(base=self.engine.base_image))
        (path / "build.sh").write_text("set -e\n" + script)
        return path

    def runs(self, name: str = "runs") -> int:
        path = self.probe / name
        return len(path.read_text().splitlines()) if path.exists() else 0

    def post(
        self,
        doc: Any,
        *,
        async_: bool = False,
        token: str = "",
        raw: bytes | None = None,
        timeout: float = 120.0,
    ) -> Response:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = raw if raw is not None else json.dumps(doc).encode()
        return http(
            "POST", self.url + "/jobs" + ("?async" if async_ else ""), body, headers, timeout
        )

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return http("GET", self.url + path, headers=headers)

    def job(self, project: str, job_id: str) -> dict[str, Any]:
        resp = self.get(f"/job/{project}/{job_id}", {"Accept": "application/json"})
        assert resp.status == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc

    def client(
        self, *args: str, params: list[str] | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [MISTRY, "build", "--host", "127.0.0.1", "--port", str(self.port), *args]
        if params is not None:
            argv += ["--", *params]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def wait_ready(self, project: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            resp = self.get(f"/job/{project}/{job_id}", {"Accept": "application/json"})
            doc: dict[str, Any] = resp.json() if resp.status == 200 else {}
            return doc if doc.get("State") == "ready" else None

        return wait_for(ready, timeout, f"job {project}/{job_id} ready", log=self.daemon.logs)

    def containers(self, job_id: str) -> list[dict[str, Any]]:
        docs = self.engine.client().call(
            "GET", '/containers/json?all=1&filters={"label":["pazari.mistry.job=' + job_id + '"]}'
        )
        return list(docs or [])


MistryFactory = Callable[..., Mistry]


def write_config(
    base: Path, engine: DockerEngine, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    for sub in ("projects", "builds", "probe"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "projects_path": str(base / "projects"),
        "build_path": str(base / "builds"),
        "mounts": {str(base / "probe"): "/probe"},
        "job_concurrency": 2,
        "job_backlog": 20,
        "docker_host": engine.url,
    }
    config.update(overrides or {})
    (base / "config.json").write_text(json.dumps(config))
    return config


def mistryd_argv(base: Path, port: int) -> list[str]:
    return [MISTRYD, "--config", str(base / "config.json"), "--addr", f"127.0.0.1:{port}"]


@pytest.fixture(scope="module")
def shared_mistry(
    docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mistry]:
    """One mistryd for a module's tests that need no isolation (no run counting)."""
    base = tmp_path_factory.mktemp("shared-mistry")
    config = write_config(base, docker_engine, None)
    port = free_port()
    with Daemon(mistryd_argv(base, port), timeout=60, workdir=base / "daemon") as daemon:
        yield Mistry(daemon, port, base, config, docker_engine)


def make_mistry_factory(
    daemon_factory: DaemonFactory, docker_engine: DockerEngine, tmp_path: Path
) -> MistryFactory:
    """``factory(config_overrides=None, args=(), root=None, port=None)`` starts a mistryd
    (stopped by daemon_factory's teardown)."""
    started: list[Mistry] = []

    def make(
        overrides: dict[str, Any] | None = None,
        args: tuple[str, ...] = (),
        root: Path | None = None,
        port: int | None = None,
        wait_ready: bool = True,
    ) -> Mistry:
        base = root or tmp_path / f"m{len(started)}"
        config = write_config(base, docker_engine, overrides)
        port = port or free_port()
        daemon = daemon_factory(
            [*mistryd_argv(base, port), *args], ready="notify" if wait_ready else "none", timeout=60
        )
        m = Mistry(daemon, port, base, config, docker_engine)
        started.append(m)
        return m

    return make


@pytest.fixture
def mistry_factory(
    daemon_factory: DaemonFactory, docker_engine: DockerEngine, tmp_path: Path
) -> MistryFactory:
    return make_mistry_factory(daemon_factory, docker_engine, tmp_path)


@pytest.fixture
def mistry(mistry_factory: MistryFactory) -> Mistry:
    return mistry_factory()
