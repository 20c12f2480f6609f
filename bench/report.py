"""``make bench-report``: bench/results/*.json rendered as one Markdown page (issue 15).

One table per service (every figure of a result file, flattened, with the bound it is held
to where the file names one, and whether it is gated), the attempts each gate needed, and
PNG plots: p50/p99 against the peers of the tail-latency gates, and each gate's attempt
scores. ``python -m bench.report [RESULTS_DIR]`` writes RESULTS_DIR/REPORT.md and
RESULTS_DIR/*.png.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"
SERVICES = ("rafka", "resp", "scratchd", "downloader", "mistry", "mime", "runtime")


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key in sorted(doc):
        value = doc[key]
        name = f"{prefix}{key}"
        if key in ("attempts", "attempt_scores"):
            continue
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        elif isinstance(value, list) and len(value) > 8:
            yield name, f"[{len(value)} values]"
        else:
            yield name, value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _service(name: str) -> str:
    return next((s for s in SERVICES if name.startswith(s)), "other")


def _plot_latency(docs: Mapping[str, Mapping[str, Any]], out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, float, float]] = []
    for name, doc in docs.items():
        for peer, value in doc.items():
            if isinstance(value, Mapping) and "p99_ms" in value and "p50_ms" in value:
                rows.append((f"{name}\n{peer}", float(value["p50_ms"]), float(value["p99_ms"])))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 1.3), 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r[1] for r in rows], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [r[2] for r in rows], 0.4, label="p99")
    ax.set_xticks(list(xs), [r[0] for r in rows], fontsize=7, rotation=25, ha="right")
    ax.set_ylabel("ms")
    ax.set_title("latency against the peers (same run)")
    ax.legend()
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _plot_attempts(docs: Mapping[str, Mapping[str, Any]], out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {n: d["attempt_scores"] for n, d in docs.items() if d.get("attempt_scores")}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, scores in series.items():
        ax.plot(range(1, len(scores) + 1), scores, marker="o", label=name)
    ax.set_xlabel("attempt")
    ax.set_ylabel("score (higher is better)")
    ax.set_title("gate attempts")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "attempts.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def render(results: Path = RESULTS) -> Path:
    docs = {p.stem: orjson.loads(p.read_bytes()) for p in sorted(results.glob("*.json"))}
    by_service: dict[str, list[str]] = defaultdict(list)
    for name in docs:
        by_service[_service(name)].append(name)
    lines = ["# Benchmark gates", "",
             f"{len(docs)} result files from `make bench-gate` (bench/results/). A figure is "
             "gated where its file names a bound; `gated: false` marks one reported, not gated.",
             ""]
    for service in [*SERVICES, "other"]:
        names = by_service.get(service)
        if not names:
            continue
        lines += [f"## {service}", "", "| result | figure | value |", "|---|---|---|"]
        for name in names:
            doc = docs[name]
            attempts = len(doc.get("attempt_scores", [])) or 1
            lines.append(f"| **{name}** | attempts | {attempts} |")
            lines += [f"| | {key} | {_fmt(value)} |" for key, value in _flatten(doc)]
        lines.append("")
    plots = [p for p in (_plot_latency(docs, results), _plot_attempts(docs, results)) if p]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    page = results / "REPORT.md"
    page.write_text("\n".join(lines))
    return page


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
