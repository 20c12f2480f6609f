"""The Docker Engine API client against real podman (spec §5)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pazari.mistry.engine import LABEL, STDERR, STDOUT, Demuxer, Engine, EngineError
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
