"""mistryd's JSON config (spec §4), strict as every pazari config, plus the settings for
what the original lacked: build timeout, bearer auth and retention."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from pazari.mistry.engine import Engine, Engines, EngineTLS
from pazari.mistry.names import InvalidName, check_project
from pazari.runtime.cli import config_exit
from pazari.runtime.config import ConfigError, from_json
from pazari.runtime.logs import get_logger


@dataclass
class RetentionConfig:
    """The janitor (issues #25/#122): per project and group keep the newest ``keep_last``
    ready builds and/or drop ready builds older than ``max_age_seconds``; 0 disables."""

    keep_last: int = 0
    max_age_seconds: float = 0.0
    interval_seconds: float = 3600.0

    def validate(self) -> tuple[str, str] | None:
        if self.keep_last < 0:
            return ("keep_last", "must not be negative")
        if self.max_age_seconds < 0:
            return ("max_age_seconds", "must not be negative")
        if self.interval_seconds <= 0:
            return ("interval_seconds", "must be positive")
        return None

    @property
    def enabled(self) -> bool:
        return self.keep_last > 0 or self.max_age_seconds > 0


@dataclass
class LimitsConfig:
    """Limits of a project's builds (issue 10); 0 leaves each one unlimited.

    ``memory_bytes``, ``cpus`` and ``pids`` go to the container (HostConfig Memory,
    NanoCpus, PidsLimit); ``timeout_seconds`` bounds image build plus run, as
    ``build_timeout`` does for every project; ``max_concurrent`` caps the builds of the
    project running at once, so that one project cannot take every worker."""

    memory_bytes: int = 0
    cpus: float = 0.0
    pids: int = 0
    timeout_seconds: float = 0.0
    max_concurrent: int = 0

    def validate(self) -> tuple[str, str] | None:
        for key in ("memory_bytes", "cpus", "pids", "timeout_seconds", "max_concurrent"):
            if getattr(self, key) < 0:
                return (key, "must not be negative")
        if 0 < self.memory_bytes < 6 * 1024 * 1024:
            return ("memory_bytes", "must be at least 6 MiB (the engines refuse less)")
        return None


@dataclass
class EngineConfig:
    """One engine of ``engines`` (issue 16): where it is and, for tcp://, its TLS files."""

    docker_host: str = ""
    docker_tls_ca: str = ""
    docker_tls_cert: str = ""
    docker_tls_key: str = ""

    def tls(self) -> EngineTLS | None:
        if not self.docker_tls_ca:
            return None
        return EngineTLS(self.docker_tls_ca, self.docker_tls_cert, self.docker_tls_key)

    def validate(self) -> tuple[str, str] | None:
        tls = (self.docker_tls_ca, self.docker_tls_cert, self.docker_tls_key)
        if any(tls):
            if not all(tls):
                return ("docker_tls_ca", "docker_tls_ca, docker_tls_cert and docker_tls_key "
                        "go together")
            if not self.docker_host.startswith("tcp://"):
                return ("docker_host", "must be tcp://HOST:PORT with the docker_tls_* keys")
            for key in ("docker_tls_ca", "docker_tls_cert", "docker_tls_key"):
                if not Path(getattr(self, key)).is_file():
                    return (key, f"{getattr(self, key)} is not a file")
        return None


@dataclass
class MistryConfig:
    projects_path: str = ""
    build_path: str = ""
    mounts: dict[str, str] = field(default_factory=dict)
    job_concurrency: int = 0
    job_backlog: int = 0
    # The container user and the ``uid`` build-arg; the server's own uid by default.
    uid: str = ""
    # Overrides --addr when set (the original's undocumented ``Addr`` key).
    addr: str = ""
    # unix:///path or tcp://host:port; empty means $DOCKER_HOST, then /var/run/docker.sock.
    docker_host: str = ""
    # A tcp:// engine behind TLS (issue 16), as the Docker CLI's --tlscacert/--tlscert/
    # --tlskey: the CA that signed the engine's certificate and mistryd's client pair.
    docker_tls_ca: str = ""
    docker_tls_cert: str = ""
    docker_tls_key: str = ""
    # Several engines (issue 16), each project built on one of them, chosen by rendezvous
    # hashing of its name; replaces docker_host and docker_tls_*. Every engine must see
    # build_path and the mounts at the same paths (they are bind-mounted into the builds).
    engines: list[EngineConfig] = field(default_factory=list)
    # Global build timeout in seconds (image build + run); 0 means none.
    build_timeout: float = 0.0
    # Token (Bearer, or the password of HTTP Basic) required for every endpoint but
    # /metrics and /healthz; empty disables auth.
    auth_token: str = ""
    # With auth_token set, leave the reads (job pages, /index/, /log/, /artifacts/, the
    # web view) open and guard only POST /jobs and DELETE /job.
    public_read: bool = False
    # Keep the previous build's artifacts/ in an incremental clone (the original did, §1.5).
    keep_artifacts: bool = False
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    # Limits of every project's builds, and per project name (replacing the default).
    default_limits: LimitsConfig = field(default_factory=LimitsConfig)
    project_limits: dict[str, LimitsConfig] = field(default_factory=dict)

    def engine_configs(self) -> list[EngineConfig]:
        """``engines``, or the one engine of ``docker_host`` and ``docker_tls_*``."""
        return self.engines or [EngineConfig(self.docker_host, self.docker_tls_ca,
                                             self.docker_tls_cert, self.docker_tls_key)]

    def make_engines(self) -> Engines:
        return Engines([Engine(e.docker_host or None, e.tls()) for e in self.engine_configs()])

    def limits(self, project: str) -> LimitsConfig:
        return self.project_limits.get(project, self.default_limits)

    def validate(self) -> tuple[str, str] | None:
        for key in ("projects_path", "build_path"):
            value = getattr(self, key)
            if not value:
                return (key, "is required")
            if not Path(value).is_dir():
                return (key, f"{value} does not exist or is not a directory")
        if self.engines and (self.docker_host or self.docker_tls_ca):
            return ("engines", "replaces docker_host and docker_tls_*: give one or the other")
        for i, engine in enumerate(self.engine_configs()):
            problem = engine.validate()
            if problem is not None:
                prefix = f"engines[{i}]." if self.engines else ""
                return (prefix + problem[0], problem[1])
        if self.job_concurrency < 0:
            return ("job_concurrency", "must not be negative")
        if self.job_backlog < 0:
            return ("job_backlog", "must not be negative")
        if self.build_timeout < 0:
            return ("build_timeout", "must not be negative")
        for name in self.project_limits:
            if check_project_name(name):
                return (f"project_limits.{name}", "is not a valid project name")
        for src in self.mounts:
            if not os.path.isabs(src):
                return (f"mounts.{src}", "host path must be absolute")
        return None

    @property
    def concurrency(self) -> int:
        return self.job_concurrency or os.cpu_count() or 1

    @property
    def backlog(self) -> int:
        return self.job_backlog or 2 * self.concurrency

    @property
    def user(self) -> str:
        return self.uid or str(os.getuid())


# Keys the original accepted and did nothing with (issue 10: its configs must load as
# they are). Go's encoding/json matched its tags case-insensitively and silently dropped
# every other key; these are the ones its own history shows in configs:
IGNORED_KEYS = {
    # the Go struct's field names: their json tags rename them, so as keys they were
    # dropped (ProjectsPath did NOT set projects_path in the original either)
    "projectspath": "the original ignored it too (its key is projects_path)",
    "buildpath": "the original ignored it too (its key is build_path)",
    "concurrency": "the original ignored it too (its key is job_concurrency)",
    "backlog": "the original ignored it too (its key is job_backlog)",
    # set by --filesystem only; the original could not take it from JSON
    "filesystem": "use --filesystem",
    # early sample configs (cmd/mistryd/config.sample.json history)
    "bind_mounts": "the original ignored it too since it became mounts",
    "!()#@_!mounts": "a disabled key in the original's early sample config",
}


def check_project_name(name: str) -> str:
    """Why ``name`` is not a project name, or ""."""
    try:
        check_project(name)
    except InvalidName as exc:
        return str(exc)
    return ""


def fold_keys(doc: Any) -> tuple[Any, list[str]]:
    """Match top-level keys to ours case-insensitively as Go's encoding/json does (``UID``,
    ``Addr``, ``Projects_Path``; the last of two spellings wins, as in Go), and drop the
    keys the original ignored. Returns the folded doc and the dropped keys; any other
    key is left for the strict loader to refuse."""
    if not isinstance(doc, dict):
        return doc, []
    names = {f.name for f in fields(MistryConfig)}
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in doc.items():
        low = str(key).lower().replace("-", "_")
        if low in names:
            out.pop(low, None)
            out[low] = value
        elif low in IGNORED_KEYS:
            dropped.append(str(key))
        else:
            out[key] = value
    return out, dropped


def load_mistry_config(path: str) -> MistryConfig:
    """Load mistryd's config: unknown keys exit 2 naming the key, ignored keys of the
    original give one warning line naming them."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        config_exit(ConfigError(path, "$", f"cannot read file: {exc.strerror or exc}"))
    except orjson.JSONDecodeError as exc:
        config_exit(ConfigError(path, "$", f"invalid JSON: {exc}"))
    folded, dropped = fold_keys(doc)
    if dropped:
        why = "; ".join(f"{k}: {IGNORED_KEYS[k.lower().replace('-', '_')]}" for k in dropped)
        get_logger("mistry.config").warning(
            "%s: ignoring keys the original mistry ignored: %s", path, why
        )
    try:
        return from_json(folded, MistryConfig, file=path)
    except ConfigError as exc:
        config_exit(exc)
