"""Per-project limits (issue 10): container memory, CPUs and pids, a wall timeout, and a
per-project concurrency cap that leaves the other workers to other projects."""

from __future__ import annotations

import threading
import time

from tests.mistry.conftest import MistryFactory, Response

# cgroup v2 files, else the v1 ones (this CI host has v1)
REPORT = """\
first() { for f in "$@"; do [ -r "$f" ] && { cat "$f"; return; }; done; echo none; }
C=/sys/fs/cgroup
first $C/memory.max $C/memory/memory.limit_in_bytes > artifacts/memory
first $C/pids.max $C/pids/pids.max > artifacts/pids
first $C/cpu.max $C/cpu/cpu.cfs_quota_us $C/cpu,cpuacct/cpu.cfs_quota_us > artifacts/cpu
"""
# Each run appends "<project> start" and "<project> end" to one probe file.
SPAN = 'echo "$P start" >> /probe/spans\nsleep 3\necho "$P end" >> /probe/spans\n'


def test_container_limits_and_wall_timeout(mistry_factory: MistryFactory) -> None:
    m = mistry_factory(
        {
            "default_limits": {"memory_bytes": 48 * 1024 * 1024, "pids": 32},
            "project_limits": {
                "limited": {"memory_bytes": 64 * 1024 * 1024, "cpus": 0.5, "pids": 64},
                "slow": {"timeout_seconds": 2},
            },
        }
    )
    m.project("limited", REPORT)
    m.project("defaulted", REPORT)
    m.project("slow", "sleep 60\n")
    # A project's own limits replace the default ones; the others get the default.
    for project, memory, pids, cpu in [
        ("limited", 64 * 1024 * 1024, "64", "50000"),  # 0.5 of a 100000 period
        ("defaulted", 48 * 1024 * 1024, "32", None),
    ]:
        resp = m.post({"project": project})
        assert resp.status == 201, resp.text
        artifacts = m.builds / project / "ready" / resp.json()["URL"].rsplit("/", 1)[-1]
        artifacts = artifacts / "data" / "artifacts"
        assert (artifacts / "memory").read_text().strip() == str(memory)
        assert (artifacts / "pids").read_text().strip() == pids
        quota = (artifacts / "cpu").read_text().split()[0]
        assert quota == cpu if cpu else quota in ("max", "-1"), quota  # unlimited: v2, v1
    began = time.monotonic()
    slow = m.post({"project": "slow"}, timeout=60)
    assert time.monotonic() - began < 30
    # Killed in the container (201 with ErrBuild) or, on a loaded host, already in the
    # image build (500): the timeout covers both.
    text = slow.json()["ErrBuild"] if slow.status == 201 else slow.text
    assert "work: build timed out after 2s" in text, slow.text


def test_per_project_cap_leaves_workers_to_others(mistry_factory: MistryFactory) -> None:
    m = mistry_factory({"job_concurrency": 2, "project_limits": {"capped": {"max_concurrent": 1}}})
    m.project("capped", "P=capped\n" + SPAN)
    m.project("other", "P=other\n" + SPAN)
    results: list[Response] = []
    lock = threading.Lock()

    def post(project: str, n: int) -> None:
        resp = m.post({"project": project, "params": {"n": str(n)}}, timeout=120)
        with lock:
            results.append(resp)

    # Two capped jobs first, then one of another project: the second capped job must not
    # hold the second worker while it waits for the first.
    threads = [threading.Thread(target=post, args=("capped", n)) for n in (1, 2)]
    threads.append(threading.Thread(target=post, args=("other", 1)))
    for t in threads:
        t.start()
        t.join(0.3)
    for t in threads:
        t.join(120)
    assert [r.status for r in results] == [201] * 3, [r.text for r in results]
    spans = (m.probe / "spans").read_text().split("\n")
    capped = [line for line in spans if line.startswith("capped")]
    assert capped == ["capped start", "capped end", "capped start", "capped end"]
    # "other" started before the second capped build: it did not wait behind the cap.
    assert spans.index("other start") < spans.index("capped start", 1)


def test_negative_limit_is_a_config_error(mistry_factory: MistryFactory) -> None:
    m = mistry_factory({"project_limits": {"p": {"pids": -1}}}, wait_ready=False)
    assert m.daemon.wait_exit(30) == 2
    assert "$.project_limits.p.pids: must not be negative" in m.daemon.logs()
