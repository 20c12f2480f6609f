"""Build the Cython hot paths.

Every ``ext/<hot path>/<module>.pyx`` compiles to ``pazari.<hot path>.<module>``, so the
compiled module lands in ``src/pazari/<hot path>/`` beside its pure-Python twin (the layout of
asyncpg and aiohttp, see ../shared/style.md). All compiler directives live here, in one place.
``PAZARI_DEBUG_EXT=1`` builds with annotate, line tracing and checked indexing.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).parent
DEBUG = os.environ.get("PAZARI_DEBUG_EXT") == "1"

DIRECTIVES: dict[str, object] = {
    "language_level": 3,
    "embedsignature": True,
    # Release builds: lengths are checked once, explicitly, in the code itself; indexing then
    # works on pointers. Debug builds turn the checks back on to catch a missed one.
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "linetrace": DEBUG,
    "profile": DEBUG,
}


def _extensions() -> list[Extension]:
    exts = []
    # PAZARI_EXT_ONLY=resp,mime builds a subset (handy while several hot paths are in work).
    only = {x for x in os.environ.get("PAZARI_EXT_ONLY", "").split(",") if x}
    for pyx in sorted((ROOT / "ext").glob("*/*.pyx")):
        if only and pyx.parent.name not in only:
            continue
        rel = pyx.relative_to(ROOT)
        name = f"pazari.{pyx.parent.name}.{pyx.stem}"
        macros = [("CYTHON_TRACE_NOGIL", "1"), ("CYTHON_TRACE", "1")] if DEBUG else []
        exts.append(
            Extension(
                name,
                [str(rel)],
                include_dirs=[str(pyx.parent)],
                define_macros=macros,
                # event frames the pixel's spool records with zlib's crc32 (issue 17).
                libraries=["z"] if pyx.parent.name == "event" else [],
                extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
            )
        )
    return exts


def _stage_pxds(build_dir: Path) -> Path:
    """Copy ext/<hot path>/<mod>.pxd to <build>/pxd/pazari/<hot path>/<mod>.pxd.

    Cython finds a module's own .pxd by its dotted name (pazari.resp._parser), so the .pxd
    beside the .pyx in ext/ is only seen through this package-shaped include dir.
    """
    stage = build_dir / "pxd"
    for pxd in sorted((ROOT / "ext").glob("*/*.pxd")):
        dest = stage / "pazari" / pxd.parent.name / pxd.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists() or dest.read_bytes() != pxd.read_bytes():
            dest.write_bytes(pxd.read_bytes())
    return stage


def _cythonize() -> list[Extension]:
    from Cython.Build import cythonize

    # Debug and release C sources live apart, so switching modes never reuses stale C.
    build_dir = ROOT / "build" / ("cython-debug" if DEBUG else "cython")
    return cythonize(
        _extensions(),
        compiler_directives=DIRECTIVES,
        annotate=DEBUG,
        build_dir=str(build_dir.relative_to(ROOT)),
        include_path=[str(_stage_pxds(build_dir))],
    )


setup(ext_modules=_cythonize())
