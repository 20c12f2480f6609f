"""End-to-end: the ``mistry`` client binary against a spawned ``mistryd`` and real podman
(issue 5 acceptance: simple build, params, exit codes, logs, result cache, group cache,
async builds, clearing the target, unknown project, image build failure)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.mistry.conftest import Mistry

SIMPLE = """\
echo "building $(cat params/* 2>/dev/null | tr '\\n' ' ')"
echo run >> /probe/runs
for f in params/*; do cp "$f" artifacts/; done 2>/dev/null || true
echo done > artifacts/result.txt
"""


def test_simple_build_fetches_artifacts_over_http(mistry: Mistry, tmp_path: Path) -> None:
    mistry.project("simple", SIMPLE)
    target = tmp_path / "out"
    done = mistry.client("--project", "simple", "--target", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Logs can be found at {mistry.url}/job/simple/")
    assert (target / "result.txt").read_text() == "done\n"
    job_id = done.stdout.split()[-1].rsplit("/", 1)[-1]
    ready = mistry.builds / "simple" / "ready" / job_id
    assert (ready / "out.log").read_text().count("building") == 1
    assert json.loads((ready / "build_info.json").read_text())["ExitCode"] == 0
    assert (mistry.builds / "simple" / "latest").resolve() == ready
    assert not list((mistry.builds / "simple" / "pending").iterdir())


def test_params_with_the_original_parsing_table(mistry: Mistry, tmp_path: Path) -> None:
    mistry.project("params", SIMPLE)
    lockfile = tmp_path / "yarn.lock"
    lockfile.write_text("locked-content")
    target = tmp_path / "out"
    done = mistry.client(
        "--project", "params", "--target", str(target), "--json-result",
        params=["--a", "b", "c=d", "---e", "f", f"--lock=@{lockfile}", "--_opaque", "x"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.splitlines()[0])
    assert info["Params"] == {"a": "b", "c": "d", "e": "f", "lock": "locked-content",
                              "_opaque": "x"}  # fmt: skip
    assert (target / "lock").read_text() == "locked-content"
    assert (target / "a").read_text() == "b"
    # An opaque param does not change the id: the cached result comes back.
    again = mistry.client(
        "--project", "params", "--target", str(target), "--json-result",
        params=["--a", "b", "c=d", "---e", "f", f"--lock=@{lockfile}", "--_opaque", "y"],
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    cached = json.loads(again.stdout.splitlines()[0])
    assert cached["Cached"] is True and cached["URL"] == info["URL"]
    assert mistry.runs() == 1


def test_missing_param_file_aborts(mistry: Mistry, tmp_path: Path) -> None:
    mistry.project("simple", SIMPLE)
    done = mistry.client("--project", "simple", params=[f"--x=@{tmp_path}/nope"])
    assert done.returncode == 1
    assert "could not read" in done.stderr


def test_container_failure_exit_code_and_stderr(mistry: Mistry, tmp_path: Path) -> None:
    mistry.project("failing", 'echo "to stdout"\necho "it broke badly" >&2\nexit 3\n')
    done = mistry.client("--project", "failing", "--target", str(tmp_path / "t"))
    assert done.returncode == 1
    assert "Container error logs:\n it broke badly" in done.stderr
    assert "Build failed with exit code 3" in done.stderr
    job_id = done.stdout.split()[-1].rsplit("/", 1)[-1]
    doc = mistry.job("failing", job_id)
    assert doc["State"] == "ready"
    assert doc["BuildInfo"]["ExitCode"] == 3
    log = doc["BuildInfo"]["ContainerStdouterr"]
    assert "to stdout" in log and "it broke badly" in log
    assert not (mistry.builds / "failing" / "latest").exists()  # failures are never linked


def test_failed_builds_are_not_cached(mistry: Mistry) -> None:
    mistry.project("flaky", "echo run >> /probe/runs\nexit 1\n")
    first = mistry.post({"project": "flaky"})
    second = mistry.post({"project": "flaky"})
    assert first.status == second.status == 201
    assert first.json()["ExitCode"] == second.json()["ExitCode"] == 1
    assert second.json()["Cached"] is False
    assert mistry.runs() == 2


def test_result_cache(mistry: Mistry, tmp_path: Path) -> None:
    mistry.project("cached", SIMPLE)
    args = ("--project", "cached", "--json-result", "--target", str(tmp_path / "t"))
    first = json.loads(mistry.client(*args).stdout.splitlines()[0])
    second = json.loads(mistry.client(*args).stdout.splitlines()[0])
    assert (first["Cached"], second["Cached"]) == (False, True)
    assert second["StartedAt"] == first["StartedAt"]
    assert second["Duration"] == first["Duration"]
    assert "building" in second["ContainerStdouterr"]
    assert mistry.runs() == 1
    metrics = mistry.get("/metrics").text
    assert 'mistry_cache_utilization{project="cached"} 1' in metrics
    assert 'mistry_builds_started{project="cached"} 2' in metrics


GROUP_SCRIPT = """\
n=$(cat cache/n 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > cache/n
ls artifacts > /probe/seen-$n
cp cache/n artifacts/n
"""


def test_group_cache_is_incremental(mistry: Mistry, tmp_path: Path) -> None:
    mistry.project("incr", GROUP_SCRIPT)

    def build(group: str, value: str) -> dict[str, object]:
        target = tmp_path / f"{group}-{value}"
        args = ["--project", "incr", "--json-result", "--target", str(target)]
        done = mistry.client(*args, *(["--group", group] if group else []), params=[f"v={value}"])
        assert done.returncode == 0, done.stderr
        info: dict[str, object] = json.loads(done.stdout.splitlines()[0])
        info["n"] = (target / "n").read_text().strip()
        return info

    a = build("foo", "1")
    b = build("bar", "1")
    c = build("foo", "2")
    d = build("bar", "2")
    none = build("", "3")
    assert [x["n"] for x in (a, b, c, d, none)] == ["1", "1", "2", "2", "1"]
    assert [x["Incremental"] for x in (a, b, c, d, none)] == [False, False, True, True, False]
    # Stale artifacts of the previous build do not leak into the next (spec §8).
    assert (mistry.probe / "seen-2").read_text() == ""
    link = mistry.builds / "incr" / "groups" / "foo"
    assert link.resolve().name == str(c["URL"]).rsplit("/", 1)[-1]
    metrics = mistry.get("/metrics").text
    assert 'mistry_builds_processed_incrementally{project="incr"} 2' in metrics


def test_async_build(mistry: Mistry) -> None:
    mistry.project("later", "sleep 1\necho done > artifacts/x\n")
    done = mistry.client("--project", "later", "--no-wait", "--json-result")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

    def listed() -> list[dict[str, object]]:
        return [j for j in mistry.get("/index/").json() if j["project"] == "later"]

    from tests.support.ports import wait_for

    job = wait_for(listed, 30, "async job in /index/")[0]
    mistry.wait_ready("later", str(job["id"]))
    assert mistry.job("later", str(job["id"]))["BuildInfo"]["ExitCode"] == 0


def test_clear_target(mistry: Mistry, tmp_path: Path) -> None:
    mistry.project("clear", SIMPLE)
    target = tmp_path / "t"
    (target / "olddir").mkdir(parents=True)
    (target / "stray").write_text("x")
    kept = mistry.client("--project", "clear", "--target", str(target) + "/")
    assert kept.returncode == 0, kept.stderr
    assert (target / "stray").exists()
    cleared = mistry.client("--project", "clear", "--target", str(target), "--clear-target")
    assert cleared.returncode == 0, cleared.stderr
    assert sorted(p.name for p in target.iterdir()) == ["result.txt"]


def test_unknown_project(mistry: Mistry) -> None:
    done = mistry.client("--project", "idontexist")
    assert done.returncode == 1
    assert "(error: 404) Error scheduling build" in done.stderr
    assert "Unknown project 'idontexist'" in done.stderr


def test_image_build_failure(mistry: Mistry) -> None:
    mistry.project(
        "badimage", "true\n", dockerfile="FROM {base}\nRUN echo image-step-output && exit 9\n"
    )
    done = mistry.client("--project", "badimage")
    assert done.returncode == 1
    assert "(error: 500)" in done.stderr
    assert "could not build docker image 'mistry-badimage'" in done.stderr
    assert "Image build output (last lines):" in done.stderr
    assert "image-step-output" in done.stderr
    ready = list((mistry.builds / "badimage" / "ready").iterdir())
    assert len(ready) == 1 and not list((mistry.builds / "badimage" / "pending").iterdir())
    info = json.loads((ready[0] / "build_info.json").read_text())
    assert info["ExitCode"] == -999 and "could not build docker image" in info["ErrBuild"]
    assert "image-step-output" in (ready[0] / "out.log").read_text()


def test_client_validation(mistry: Mistry) -> None:
    bad = mistry.client("--project", "x", "--transport", "ftp")
    assert (bad.returncode, bad.stderr.strip()) == (1, "invalid transport argument (ftp)")
    none = mistry.client("--project", "x", "--transport", "")
    assert "you need to either specify a transport or use the async flag" in none.stderr
    timeout = mistry.client("--project", "x", "--timeout", "soon")
    assert timeout.returncode == 1 and "invalid duration" in timeout.stderr
