"""The Docker Engine API client against real podman (spec §5)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from pazari.mistry.engine import (
    LABEL,
    STDERR,
    STDOUT,
    Demuxer,
    Engine,
    EngineError,
    negotiate,
)
from pazari.mistry.jobid import build_context
from tests.support.services import DockerEngine


@pytest.fixture
async def engine(docker_engine: DockerEngine) -> AsyncIterator[Engine]:
    eng = Engine(docker_engine.url)
    yield eng
    await eng.close()


def project(tmp_path: Path, base: str, body: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(f"FROM {base}\n{body}")
    return root


async def test_ping_and_demux(engine: Engine) -> None:
    assert await engine.ping()
    frames = b"\x01\x00\x00\x00\x00\x00\x00\x02hi" + b"\x02\x00\x00\x00\x00\x00\x00\x03err"
    demux = Demuxer()
    out = [f for i in range(len(frames)) for f in demux.feed(frames[i : i + 1])]
    assert out == [(STDOUT, b"hi"), (STDERR, b"err")]


async def test_build_and_run(engine: Engine, docker_engine: DockerEngine, tmp_path: Path) -> None:
    tag = f"mistry-t{uuid.uuid4().hex[:8]}"
    root = project(
        tmp_path,
        docker_engine.base_image,
        'ARG uid\nRUN echo "uid=$uid"\nWORKDIR /data\n'
        'CMD ["/bin/sh","-c","echo out; echo err >&2; id -u; cat /data/params/p; exit 3"]\n',
    )
    lines: list[str] = []
    await engine.build_image(
        build_context(root), tag, buildargs={"uid": "4242"}, labels={LABEL: "1"},
        on_output=lines.append,
    )  # fmt: skip
    assert "uid=4242" in "".join(lines)
    assert (await engine.inspect_image(tag))["Config"]["Labels"][LABEL] == "1"
    data = tmp_path / "data"
    (data / "params").mkdir(parents=True)
    (data / "params" / "p").write_text("value")
    spec = {
        "Image": tag,
        "User": "4242",
        "Labels": {LABEL: "1"},
        "HostConfig": {"Binds": [f"{data}:/data"], "NetworkMode": "host"},
    }
    cid = await engine.create_container(f"{tag}-run", spec)
    try:
        frames = await engine.attach(cid)
        await engine.start(cid)
        got: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
        async for stream, chunk in frames:
            got[stream] += chunk
        assert await engine.wait(cid) == 3
        assert got[STDOUT] == b"out\n4242\nvalue"
        assert got[STDERR] == b"err\n"
    finally:
        await engine.remove(cid)
        await engine.remove_image(tag)
    await engine.remove(cid)  # already gone: not an error


async def test_build_failure_is_reported(
    engine: Engine, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    root = project(tmp_path, docker_engine.base_image, "RUN echo failing && exit 7\n")
    lines: list[str] = []
    with pytest.raises(EngineError, match="exit status 7"):
        await engine.build_image(
            build_context(root), "mistry-broken", buildargs={}, labels={LABEL: "1"},
            on_output=lines.append,
        )  # fmt: skip
    assert "failing" in "".join(lines)


async def test_kill_and_prune_only_labelled(engine: Engine, docker_engine: DockerEngine) -> None:
    base = docker_engine.base_image
    ours = await engine.create_container(
        f"mistry-prune-{uuid.uuid4().hex[:8]}",
        {"Image": base, "Cmd": ["sleep", "60"], "Labels": {LABEL: "1"}},
    )
    theirs = await engine.create_container(
        f"other-{uuid.uuid4().hex[:8]}", {"Image": base, "Cmd": ["true"]}
    )
    try:
        await engine.start(ours)
        await engine.kill(ours)
        assert await asyncio.wait_for(engine.wait(ours), 20) != 0
        listed = {c["Id"] for c in await engine.containers()}
        assert ours in listed and theirs not in listed
        await engine.prune_containers()
        remaining = {c["Id"] for c in await engine.containers({})} | {
            c["Id"] for c in await engine.containers({LABEL: ""})
        }
        assert ours not in remaining
        status, _ = docker_engine.client().request("GET", f"/containers/{theirs}/json")
        assert status == 200
    finally:
        await engine.remove(ours)
        await engine.remove(theirs)


# GET /version bodies (the fields negotiation reads) as documented by each engine's release:
# Docker Engine API changelog / `docker version` of 20.10, 24.0, 27.x, 29.x; podman's
# compat API (version.APIVersion[compat]: 1.41 current, 1.24 minimal) in 4.x and 5.x.
VERSION_BODIES = [
    ("docker_20_10", {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12"},
     "1.41"),
    ("docker_24", {"Version": "24.0.7", "ApiVersion": "1.43", "MinAPIVersion": "1.12"}, "1.43"),
    ("docker_27", {"Version": "27.3.1", "ApiVersion": "1.47", "MinAPIVersion": "1.24"}, "1.47"),
    ("docker_29", {"Version": "29.0.0", "ApiVersion": "1.52", "MinAPIVersion": "1.44"}, "1.47"),
    ("podman_4", {"Version": "4.9.3", "ApiVersion": "1.41", "MinAPIVersion": "1.24"}, "1.41"),
    ("podman_5", {"Version": "5.2.2", "ApiVersion": "1.41", "MinAPIVersion": "1.24"}, "1.41"),
    ("no_min_version", {"ApiVersion": "1.40"}, "1.40"),
    ("minor_above_nine", {"ApiVersion": "1.100", "MinAPIVersion": "1.24"}, "1.47"),
]  # fmt: skip
REFUSED_BODIES = [
    ("min_newer_than_supported", {"ApiVersion": "1.60", "MinAPIVersion": "1.50"},
     "requires API version 1.50 or newer"),
    ("too_old", {"ApiVersion": "1.23", "MinAPIVersion": "1.12"}, "needs 1.25 or newer"),
    ("no_version_at_all", {}, "needs 1.25 or newer"),
    ("garbage", {"ApiVersion": "one.forty"}, "unreadable API version"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "expected"), [(d, e) for _, d, e in VERSION_BODIES],
                         ids=[i for i, _, _ in VERSION_BODIES])  # fmt: skip
def test_negotiate_api_version(doc: dict[str, str], expected: str) -> None:
    assert negotiate(doc) == expected


@pytest.mark.parametrize(("doc", "says"), [(d, s) for _, d, s in REFUSED_BODIES],
                         ids=[i for i, _, _ in REFUSED_BODIES])  # fmt: skip
def test_negotiate_refuses(doc: dict[str, str], says: str) -> None:
    with pytest.raises(EngineError) as err:
        negotiate(doc)
    assert says in str(err.value)


async def test_live_podman_negotiates(engine: Engine, docker_engine: DockerEngine) -> None:
    doc = docker_engine.client().call("GET", "/version")
    assert await engine.prefix() == f"/v{negotiate(doc)}"
    assert engine.api_version == doc["ApiVersion"]  # podman 4/5 speak 1.41 < 1.47
    assert await engine.containers() is not None  # a versioned call works


async def test_requests_use_the_negotiated_version(tmp_path: Path) -> None:
    """A Docker 29 look-alike on a unix socket: every request goes to /v1.47/..., and one
    whose minimum is too new fails every call with the clear error."""
    seen: list[str] = []
    minimum = {"v": "1.44"}

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": "1.52", "MinAPIVersion": minimum["v"]})

    async def anything(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/version", version)
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "d.sock")
    await web.UnixSite(runner, sock).start()
    try:
        eng = Engine(f"unix://{sock}")
        await eng.containers()
        await eng.prune_containers()
        assert seen == ["/v1.47/containers/json", "/v1.47/containers/prune"]
        await eng.close()
        minimum["v"] = "1.50"
        eng = Engine(f"unix://{sock}")
        with pytest.raises(EngineError, match=r"requires API version 1\.50"):
            await eng.containers()
        await eng.close()
    finally:
        await runner.cleanup()
