"""mistryd's JSON config (spec §4), strict as every pazari config, plus the settings for
what the original lacked: build timeout, bearer auth and retention."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


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
    # Global build timeout in seconds (image build + run); 0 means none.
    build_timeout: float = 0.0
    # Bearer token required for POST /jobs and DELETE /job/...; empty disables auth.
    auth_token: str = ""
    # Keep the previous build's artifacts/ in an incremental clone (the original did, §1.5).
    keep_artifacts: bool = False
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def validate(self) -> tuple[str, str] | None:
        for key in ("projects_path", "build_path"):
            value = getattr(self, key)
            if not value:
                return (key, "is required")
            if not Path(value).is_dir():
                return (key, f"{value} does not exist or is not a directory")
        if self.job_concurrency < 0:
            return ("job_concurrency", "must not be negative")
        if self.job_backlog < 0:
            return ("job_backlog", "must not be negative")
        if self.build_timeout < 0:
            return ("build_timeout", "must not be negative")
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
