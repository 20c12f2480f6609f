"""The original's Prometheus metrics, names kept exactly (spec §6): namespace ``mistry``,
label ``project``, counters without the ``_total`` suffix that prometheus_client would add,
so the exposition is rendered here."""

from __future__ import annotations

import math
from collections import defaultdict

BUCKETS = (120.0, 240.0, 360.0, math.inf)

COUNTERS = {
    "builds_started": "Number of builds started (including cached and coalesced).",
    "builds_finished": "Number of builds whose container ran.",
    "builds_coalesced": "Number of builds coalesced onto an identical running build.",
    "builds_processed_incrementally": "Number of successful incremental builds.",
    "cache_utilization": "Number of result-cache hits.",
}
HISTOGRAMS = {
    "builds_succeeded_seconds": "Duration of successful builds.",
    "builds_failed_seconds": "Duration of failed builds.",
}


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _bound(b: float) -> str:
    return "+Inf" if math.isinf(b) else repr(b)


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[str, int]] = {n: defaultdict(int) for n in COUNTERS}
        self.histograms: dict[str, dict[str, _Histogram]] = {
            n: defaultdict(_Histogram) for n in HISTOGRAMS
        }
        self.hosted: dict[str, int] = {}

    def inc(self, name: str, project: str) -> None:
        self.counters[name][project] += 1

    def observe(self, name: str, project: str, seconds: float) -> None:
        self.histograms[name][project].observe(seconds)

    def render(self) -> bytes:
        out: list[str] = [
            "# HELP mistry_builds_hosted Number of builds hosted per project.",
            "# TYPE mistry_builds_hosted gauge",
        ]
        for project, n in sorted(self.hosted.items()):
            out.append(f'mistry_builds_hosted{{project="{_escape(project)}"}} {n}')
        for name, doc in COUNTERS.items():
            out += [f"# HELP mistry_{name} {doc}", f"# TYPE mistry_{name} counter"]
            for project, n in sorted(self.counters[name].items()):
                out.append(f'mistry_{name}{{project="{_escape(project)}"}} {n}')
        for name, doc in HISTOGRAMS.items():
            out += [f"# HELP mistry_{name} {doc}", f"# TYPE mistry_{name} histogram"]
            for project, h in sorted(self.histograms[name].items()):
                label = f'project="{_escape(project)}"'
                for bound, count in zip(BUCKETS, h.counts, strict=True):
                    out.append(f'mistry_{name}_bucket{{{label},le="{_bound(bound)}"}} {count}')
                out.append(f"mistry_{name}_sum{{{label}}} {h.total!r}")
                out.append(f"mistry_{name}_count{{{label}}} {h.n}")
        return ("\n".join(out) + "\n").encode()
