"""The offline subcommands: ``mistryd rebuild`` (spec §4) and ``mistryd delete-build``
(issue #122)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from pazari.mistry import janitor
from pazari.mistry.config import MistryConfig
from pazari.mistry.engine import LABEL, LABEL_PROJECT, EngineError
from pazari.mistry.filesystem import make_filesystem
from pazari.mistry.jobid import build_context
from pazari.mistry.names import InvalidName, check_job_id, check_project
from pazari.mistry.store import Layout


def enumerate_projects(projects_path: str) -> list[str]:
    """Subdirectories of projects_path that have a Dockerfile (spec §1.1)."""
    out = []
    for entry in sorted(Path(projects_path).iterdir()):
        if not entry.is_dir():
            continue
        if not (entry / "Dockerfile").is_file():
            print(f"{entry}/Dockerfile doesn't exist", file=sys.stderr)
            continue
        out.append(entry.name)
    return out


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}B"


async def rebuild(
    config: MistryConfig, projects: list[str], fail_fast: bool, verbose: bool, pull: bool = True
) -> int:
    """Rebuild each project's image without the layer cache and, as the original
    (PullParent, spec §4), pulling its parent image unless ``pull`` is off (``--no-pull``,
    for offline hosts); then prune only what mistry created (the original pruned every
    stopped container and dangling image)."""
    engines = config.make_engines()
    names = projects or enumerate_projects(config.projects_path)
    rebuilt, failed = 0, []
    pruned_images = pruned_containers = reclaimed = 0
    try:
        for name in names:
            try:
                check_project(name)
                directory = Path(config.projects_path) / name
                if not directory.is_dir():
                    raise FileNotFoundError(f"Unknown project '{name}'")
                print(f"Rebuilding {name}...")
                await engines.for_project(name).build_image(
                    build_context(directory),
                    f"mistry-{name}",
                    buildargs={"uid": config.user},
                    labels={LABEL: "1", LABEL_PROJECT: name},
                    nocache=True,
                    pull=pull,
                    on_output=(lambda t: print(t, end="")) if verbose else None,
                )
                rebuilt += 1
            except (EngineError, OSError, InvalidName) as exc:
                hint = " (offline? --no-pull skips pulling the parent image)" if pull else ""
                print(f"could not rebuild {name}: {exc}{hint}", file=sys.stderr)
                failed.append(name)
                if fail_fast:
                    break
        for engine in engines:
            with contextlib.suppress(EngineError, OSError):
                doc = await engine.prune_containers()
                pruned_containers += len(doc.get("ContainersDeleted") or [])
                reclaimed += int(doc.get("SpaceReclaimed") or 0)
                doc = await engine.prune_images()
                pruned_images += len(doc.get("ImagesDeleted") or [])
                reclaimed += int(doc.get("SpaceReclaimed") or 0)
    finally:
        await engines.close()
    text = (
        f"Finished. Rebuilt: {rebuilt}, Pruned images: {pruned_images}, "
        f"Pruned containers: {pruned_containers}, Reclaimed: {human_size(reclaimed)}, "
        f"Failed: {len(failed)}"
    )
    if failed:
        print(f"{text}, Failed names: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(text)
    return 0


async def delete_builds(config: MistryConfig, filesystem: str, project: str, ids: list[str]) -> int:
    layout = Layout(config.build_path)
    fs = make_filesystem(filesystem)
    code = 0
    for jid in ids:
        try:
            await janitor.delete_build(layout, fs, check_project(project), check_job_id(jid))
            print(f"deleted {project}/{jid}")
        except (janitor.ProtectedBuild, FileNotFoundError, InvalidName) as exc:
            print(f"not deleted: {exc}", file=sys.stderr)
            code = 1
    return code
