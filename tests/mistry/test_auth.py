"""With ``auth_token`` set every endpoint but /metrics and /healthz needs the token, as
Bearer or as the password of HTTP Basic (issue 10); ``public_read`` opens the reads."""

from __future__ import annotations

import base64
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mistry.conftest import MISTRY, Mistry, mistryd_argv, write_config
from tests.support.daemon import Daemon
from tests.support.ports import free_port
from tests.support.services import DockerEngine

TOKEN = "s3cret-token"
QUICK = "echo run >> /probe/runs\necho x > artifacts/x\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def call(
    m: Mistry, method: str, path: str, auth: str = "", body: bytes | None = None
) -> tuple[int, list[str]]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(m.url + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            return resp.status, []
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, exc.headers.get_all("WWW-Authenticate") or []


def start(engine: DockerEngine, base: Path, overrides: dict[str, object]) -> Iterator[Mistry]:
    config = write_config(base, engine, overrides)
    port = free_port()
    with Daemon(mistryd_argv(base, port), timeout=60, workdir=base / "daemon") as daemon:
        m = Mistry(daemon, port, base, config, engine)
        m.project("quick", QUICK)
        resp = m.post({"project": "quick"}, token=TOKEN)
        assert resp.status == 201, resp.text
        yield m


@pytest.fixture(scope="module")
def guarded(
    docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mistry]:
    yield from start(docker_engine, tmp_path_factory.mktemp("auth"), {"auth_token": TOKEN})


@pytest.fixture(scope="module")
def public(
    docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mistry]:
    yield from start(
        docker_engine,
        tmp_path_factory.mktemp("public"),
        {"auth_token": TOKEN, "public_read": True},
    )


def job_id(m: Mistry) -> str:
    return next((m.builds / "quick" / "ready").iterdir()).name


READS = ["/index/", "/", "/job/quick/{id}", "/log/quick/{id}", "/artifacts/quick/{id}",
         "/debug/vars"]  # fmt: skip
AUTHS = [
    ("none", "", False),
    ("bearer", f"Bearer {TOKEN}", True),
    ("bearer_lowercase_scheme", f"bearer {TOKEN}", True),
    ("basic_password", basic("anyone", TOKEN), True),
    ("basic_empty_user", basic("", TOKEN), True),
    ("wrong_bearer", "Bearer wrong", False),
    ("token_prefix", f"Bearer {TOKEN[:-1]}", False),
    ("token_as_basic_user", basic(TOKEN, ""), False),
    ("basic_not_base64", "Basic !!!", False),
    ("other_scheme", f"Token {TOKEN}", False),
]


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize(
    ("auth", "ok"), [(a, o) for _, a, o in AUTHS], ids=[i for i, _, _ in AUTHS]
)
def test_reads_need_the_token(guarded: Mistry, path: str, auth: str, ok: bool) -> None:
    status, challenges = call(guarded, "GET", path.format(id=job_id(guarded)), auth)
    if ok:
        assert status in (200, 204), status
    else:
        assert status == 401
        assert 'Bearer realm="mistry"' in challenges
        assert any(c.startswith('Basic realm="mistry"') for c in challenges)


@pytest.mark.parametrize("path", ["/metrics", "/healthz"])
def test_metrics_and_health_stay_open(guarded: Mistry, path: str) -> None:
    assert call(guarded, "GET", path)[0] == 200


@pytest.mark.parametrize("server", ["guarded", "public"])
def test_writes_need_the_token(server: str, request: pytest.FixtureRequest) -> None:
    m: Mistry = request.getfixturevalue(server)
    body = b'{"project": "quick"}'
    assert call(m, "POST", "/jobs", "", body)[0] == 401
    assert call(m, "POST", "/jobs", "Bearer nope", body)[0] == 401
    assert call(m, "DELETE", f"/job/quick/{job_id(m)}")[0] == 401
    assert call(m, "POST", "/jobs", basic("u", TOKEN), body)[0] == 201
    assert TOKEN not in m.daemon.logs()


@pytest.mark.parametrize("path", READS)
def test_public_read_opens_reads(public: Mistry, path: str) -> None:
    status, _ = call(public, "GET", path.format(id=job_id(public)))
    assert status in (200, 204)


def test_client_token_flag_and_env(guarded: Mistry, tmp_path: Path) -> None:
    refused = guarded.client("--project", "quick", "--target", str(tmp_path / "a"))
    assert refused.returncode == 1 and "(error: 401)" in refused.stderr
    flag = guarded.client("--project", "quick", "--target", str(tmp_path / "b"), "--token", TOKEN)
    assert flag.returncode == 0, flag.stderr
    assert (tmp_path / "b" / "x").read_text() == "x\n"  # /artifacts/ fetched with the token
    env = {**os.environ, "MISTRY_TOKEN": TOKEN}
    argv = [MISTRY, "build", "--host", "127.0.0.1", "--port", str(guarded.port),
            "--project", "quick", "--target", str(tmp_path / "c")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c" / "x").read_text() == "x\n"
