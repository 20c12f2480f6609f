"""Reliability against real podman: timeouts, cancellation, coalescing and a failing
leader, kill -9 and restart, graceful SIGTERM, and artifacts over an rsync daemon."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.mistry.conftest import Mistry, MistryFactory, Response, http
from tests.support.ports import free_port, wait_for
from tests.support.services import missing_dependency

SLOW = (
    "[ -e params/warm ] && exit 0\n"  # a quick run that only builds the image
    "echo run >> /probe/runs\necho started\necho about-to-sleep >&2\nsleep 60\n"
)


def job_id_of(m: Mistry, project: str) -> str:
    rows = [r for r in m.get("/index/").json() if r["project"] == project]
    assert rows, "job not indexed"
    return str(rows[0]["id"])


TIMEOUTS = [
    ("per-job", {}, ["--build-timeout", "5s"]),
    ("global", {"build_timeout": 5}, []),
]


@pytest.mark.parametrize(
    ("overrides", "flags"), [t[1:] for t in TIMEOUTS], ids=[t[0] for t in TIMEOUTS]
)
def test_timeout_kills_the_container(
    mistry_factory: MistryFactory, overrides: dict[str, object], flags: list[str]
) -> None:
    m = mistry_factory(overrides)
    m.project("slow", SLOW)
    # Build the image first so that the timeout falls in the container run.
    assert m.post({"project": "slow", "params": {"warm": "1"}}).json()["ExitCode"] == 0
    began = time.monotonic()
    done = m.client("--project", "slow", *flags)
    assert time.monotonic() - began < 30
    assert done.returncode == 1
    assert "Container error logs:\n about-to-sleep" in done.stderr
    assert "build timed out after 5s; container killed" in done.stderr
    job_id = next(r["id"] for r in m.get("/index/").json() if not r["buildInfo"]["Params"])
    info = m.job("slow", job_id)["BuildInfo"]
    assert info["ExitCode"] != 0 and "timed out" in info["ErrBuild"]
    assert "started" in info["ContainerStdouterr"]
    assert m.containers(job_id) == []  # killed and removed
    assert not list((m.builds / "slow" / "pending").iterdir())


def test_client_timeout(mistry: Mistry) -> None:
    mistry.project("slow", SLOW)
    done = mistry.client("--project", "slow", "--timeout", "1s")
    assert done.returncode == 1
    assert "The build did not finish after 1s" in done.stderr
    job_id = job_id_of(mistry, "slow")
    assert http("DELETE", f"{mistry.url}/job/slow/{job_id}").status == 202


def test_cancel_a_running_build(mistry: Mistry) -> None:
    mistry.project("slow", SLOW)
    results: list[Response] = []
    t = threading.Thread(target=lambda: results.append(mistry.post({"project": "slow"})))
    t.start()
    wait_for(lambda: mistry.runs() == 1, 60, "container running")
    job_id = job_id_of(mistry, "slow")
    assert wait_for(lambda: mistry.containers(job_id), 10, "container listed")
    began = time.monotonic()
    cancel = http("DELETE", f"{mistry.url}/job/slow/{job_id}")
    assert cancel.status == 202, cancel.text
    t.join(30)
    assert time.monotonic() - began < 15
    info = results[0].json()
    assert results[0].status == 201 and info["ExitCode"] != 0
    assert info["ErrBuild"] == "work: cancelled by a DELETE request"
    assert mistry.containers(job_id) == []
    again = http("DELETE", f"{mistry.url}/job/slow/{job_id}")
    assert again.status == 409


def test_coalescing_runs_one_container(mistry: Mistry) -> None:
    mistry.project("shared", "echo run >> /probe/runs\nsleep 2\necho x > artifacts/x\n")
    results: list[tuple[int, Response]] = []
    lock = threading.Lock()

    def params(n: int) -> dict[str, str] | None:
        # The opaque param leaves the id alone but is each request's own (spec §1.3); a
        # null Params is the id's empty params too, and its BuildInfo says null (issue 10).
        return {"_n": str(n)} if n % 2 else None

    def request(n: int) -> None:
        resp = mistry.post({"project": "shared", "params": params(n)})
        with lock:
            results.append((n, resp))

    threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert [r.status for _, r in results] == [201] * 8
    infos = [r.json() for _, r in results]
    for n, r in results:
        assert r.json()["Params"] == params(n), (n, r.text)
    assert sum(i["Coalesced"] and i["Params"] is None for i in infos) >= 3
    assert sum(i["Coalesced"] for i in infos) == 7
    assert {i["URL"] for i in infos} == {infos[0]["URL"]}
    assert {i["ExitCode"] for i in infos} == {0}
    assert mistry.runs() == 1
    # A coalesced job's own BuildInfo (spec §1.4 step 2): own Params and StartedAt,
    # Duration -1s, no logs.
    leader = next(i for i in infos if not i["Coalesced"])
    assert leader["Duration"] > 0 and "ContainerStdouterr" in leader
    for info in (i for i in infos if i["Coalesced"]):
        assert info["Duration"] == -1_000_000_000
        assert "ContainerStdouterr" not in info and "ContainerStderr" not in info
        assert info["Cached"] is False and info["Incremental"] is False
    assert len({i["StartedAt"] for i in infos}) > 1  # each job's own request time
    assert 'mistry_builds_coalesced{project="shared"} 7' in mistry.get("/metrics").text


def test_failing_leader_fails_every_follower_at_once(mistry: Mistry) -> None:
    # The image build takes 3 s and then fails: every request coalesces onto the leader
    # first, then all of them must get its error together.
    mistry.project(
        "doomed", "true\n", dockerfile="FROM {base}\nRUN sleep 3; echo leader-failing; exit 4\n"
    )
    finished: list[tuple[float, Response]] = []
    lock = threading.Lock()

    def request() -> None:
        resp = mistry.post({"project": "doomed"})
        with lock:
            finished.append((time.monotonic(), resp))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(finished) == 6
    assert {r.status for _, r in finished} == {500}
    assert all("could not build docker image" in r.text for _, r in finished)
    times = [t for t, _ in finished]
    assert max(times) - min(times) < 1.0
    # Nothing is cached: the next identical request builds again (and fails again).
    assert mistry.post({"project": "doomed"}).status == 500


def test_kill9_mid_build_then_restart(mistry_factory: MistryFactory) -> None:
    m = mistry_factory()
    m.project("crash", "echo run >> /probe/runs\nn=$(cat /probe/runs | wc -l)\n"
                       "[ $n -gt 1 ] || sleep 60\necho ok > artifacts/ok\n")  # fmt: skip
    assert m.post({"project": "crash"}, async_=True).status == 201
    wait_for(lambda: m.runs() == 1, 60, "first run started")
    job_id = job_id_of(m, "crash")
    m.daemon.kill9()
    assert (m.builds / "crash" / "pending" / job_id).is_dir()
    restarted = mistry_factory(root=m.root, port=m.port)
    assert not list((m.builds / "crash" / "pending").iterdir())
    info = json.loads((m.builds / "crash" / "ready" / job_id / "build_info.json").read_text())
    assert "interrupted" in info["ErrBuild"]
    wait_for(lambda: restarted.containers(job_id) == [], 30, "orphan container removed")
    again = restarted.post({"project": "crash"})
    assert again.status == 201, again.text
    doc = again.json()
    assert (doc["ExitCode"], doc["Cached"], doc["ErrBuild"]) == (0, False, "")
    assert restarted.runs() == 2


def test_sigterm_lets_a_short_build_finish(mistry_factory: MistryFactory) -> None:
    m = mistry_factory(args=("--drain-timeout", "30"))
    m.project("short", "echo run >> /probe/runs\nsleep 5\necho ok > artifacts/ok\n")
    results: list[Response] = []
    t = threading.Thread(target=lambda: results.append(m.post({"project": "short"})))
    t.start()
    wait_for(lambda: m.runs() == 1, 60, "build running")
    m.daemon.send_signal(signal.SIGTERM)
    wait_for(lambda: "STOPPING" in str(m.daemon.notifications), 10, "STOPPING=1")
    refused = m.post({"project": "short", "params": {"x": "1"}}, async_=True)
    assert (refused.status, refused.text) == (503, "server is shutting down\n")
    assert m.daemon.wait_exit(30) == 0
    t.join(10)
    assert results[0].status == 201 and results[0].json()["ExitCode"] == 0
    ready = list((m.builds / "short" / "ready").iterdir())
    assert len(ready) == 1 and (ready[0] / "data" / "artifacts" / "ok").exists()


def test_sigterm_cancels_a_long_build_and_records_it(mistry_factory: MistryFactory) -> None:
    m = mistry_factory(args=("--drain-timeout", "8"))
    m.project("long", SLOW)
    assert m.post({"project": "long"}, async_=True).status == 201
    wait_for(lambda: m.runs() == 1, 60, "build running")
    job_id = job_id_of(m, "long")
    began = time.monotonic()
    m.daemon.send_signal(signal.SIGTERM)
    assert m.daemon.wait_exit(30) == 0
    assert time.monotonic() - began < 20
    info = json.loads((m.builds / "long" / "ready" / job_id / "build_info.json").read_text())
    assert info["ErrBuild"] == "work: cancelled: mistryd is shutting down"
    assert not list((m.builds / "long" / "pending").iterdir())
    assert m.containers(job_id) == []


@pytest.fixture
def rsync_daemon(tmp_path: Path) -> tuple[int, list[subprocess.Popen[bytes]], Path]:
    if shutil.which("rsync") is None:
        missing_dependency("rsync not found; install it with: apt-get install -y rsync")
    return free_port(), [], tmp_path / "rsyncd"


def test_artifacts_over_rsync(
    mistry: Mistry, rsync_daemon: tuple[int, list[subprocess.Popen[bytes]], Path], tmp_path: Path
) -> None:
    port, procs, workdir = rsync_daemon
    workdir.mkdir()
    conf = workdir / "rsyncd.conf"
    conf.write_text(
        f"pid file = {workdir}/rsyncd.pid\nuse chroot = no\n"
        f"[mistry]\n  path = {mistry.builds}\n  read only = yes\n"
        "  uid = root\n  gid = root\n"
    )
    proc = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
         "--address=127.0.0.1", f"--log-file={workdir}/log"],
    )  # fmt: skip
    procs.append(proc)
    try:
        from tests.support.ports import port_is_open

        wait_for(lambda: port_is_open("127.0.0.1", port), 20, "rsync daemon")
        mistry.project("synced", "mkdir -p artifacts/sub\necho a > artifacts/a\n"
                                 "echo b > artifacts/sub/b\n")  # fmt: skip
        target = tmp_path / "t"
        target.mkdir()
        (target / "stray").write_text("x")
        args = ["--project", "synced", "--target", str(target), "--transport", "rsync",
                "--transport-port", str(port), "--transport-user", ""]  # fmt: skip
        done = mistry.client(*args)
        assert done.returncode == 0, done.stderr
        assert (target / "a").read_text() == "a\n"
        assert (target / "sub" / "b").read_text() == "b\n"
        assert (target / "stray").exists()
        cleared = mistry.client(*args, "--clear-target")
        assert cleared.returncode == 0, cleared.stderr
        assert sorted(p.name for p in target.iterdir()) == ["a", "sub"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_project_edited_while_queued_builds_what_its_id_names(
    mistry_factory: MistryFactory,
) -> None:
    """The id and the build context come from one read (issue 10): a job queued behind a
    busy worker builds the project as it was when its id was computed, and the edit makes
    a new id that builds the new contents."""
    m = mistry_factory({"job_concurrency": 1})
    m.project("busy", "echo run >> /probe/busy\nsleep 4\n")
    dockerfile = (
        'FROM {base}\nWORKDIR /data\nCOPY build.sh version.txt /\nCMD ["/bin/sh", "/build.sh"]\n'
    )
    proj = m.project("edited", "cp /version.txt artifacts/version.txt\n", dockerfile=dockerfile)
    (proj / "version.txt").write_text("v1\n")
    assert m.post({"project": "busy"}, async_=True).status == 201
    wait_for(lambda: m.runs("busy") == 1, 60, "busy job running")
    results: list[Response] = []
    waiter = threading.Thread(target=lambda: results.append(m.post({"project": "edited"})))
    waiter.start()
    wait_for(lambda: m.get("/debug/vars").json()["mistry"]["queued"] == 1, 30, "edited job queued")
    (proj / "version.txt").write_text("v2, edited while the job waited\n")
    waiter.join(120)
    assert results and results[0].status == 201, results
    first_id = results[0].json()["URL"].rsplit("/", 1)[-1]
    artifacts = m.builds / "edited" / "ready" / first_id / "data" / "artifacts"
    assert (artifacts / "version.txt").read_text() == "v1\n"
    again = m.post({"project": "edited"})
    assert again.status == 201 and again.json()["Cached"] is False
    new_id = again.json()["URL"].rsplit("/", 1)[-1]
    assert new_id != first_id
    artifacts = m.builds / "edited" / "ready" / new_id / "data" / "artifacts"
    assert (artifacts / "version.txt").read_text() == "v2, edited while the job waited\n"
