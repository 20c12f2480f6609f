"""A job: the request, its id, its future and the handles needed to abort it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pazari.mistry.buildinfo import BuildInfo
from pazari.mistry.duration import parse_duration
from pazari.mistry.logstream import LogSink
from pazari.mistry.names import check_group, check_param, check_project


class JobError(Exception):
    """A job that could not be built; ``str()`` is the original's ``work: ...`` text and
    ``detail`` what the user needs to see beside it (the tail of a failed image build)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class UnknownProject(JobError):
    pass


class BacklogFull(JobError):
    pass


class ShuttingDown(JobError):
    pass


class BadRequest(ValueError):
    pass


def request_timeout(value: Any) -> float:
    """A job's ``Timeout``: seconds as a number, or a Go duration string (``90s``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest("Timeout must be a number of seconds or a duration string")
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return float(value)


@dataclass
class JobRequest:
    project: str
    group: str = ""
    params: dict[str, str] = field(default_factory=dict)
    rebuild: bool = False
    timeout: float = 0.0  # seconds; 0 = only the global build_timeout
    # Whether the request had Params at all: the original echoed a missing or null Params
    # as null (a nil Go map) and an empty object as {} (spec §1.6).
    params_given: bool = True

    @property
    def params_doc(self) -> dict[str, str] | None:
        """BuildInfo.Params of a job made from this request."""
        return dict(self.params) if self.params_given else None

    @classmethod
    def from_doc(cls, doc: Any) -> JobRequest:
        """``{"Project","Params","Group","Rebuild"}`` matched case-insensitively like Go's
        decoder (spec §2); unknown keys ignored. Names are validated (spec §8)."""
        if not isinstance(doc, dict):
            raise BadRequest("body must be a JSON object")
        low = {str(k).lower(): v for k, v in doc.items()}
        project = low.get("project") or ""
        if not isinstance(project, str):
            raise BadRequest("Project must be a string")
        if not project:
            raise BadRequest("no project given")
        group = low.get("group") or ""
        if not isinstance(group, str):
            raise BadRequest("Group must be a string")
        params_given = low.get("params") is not None
        raw_params = low.get("params") or {}
        if not isinstance(raw_params, dict):
            raise BadRequest("Params must be an object of strings")
        params: dict[str, str] = {}
        for key, value in raw_params.items():
            if not isinstance(value, str):
                raise BadRequest(f"param {key!r} must be a string")
            params[check_param(key)] = value
        rebuild = low.get("rebuild") or False
        if not isinstance(rebuild, bool):
            raise BadRequest("Rebuild must be a boolean")
        timeout = request_timeout(low["timeout"]) if low.get("timeout") else 0.0
        if timeout < 0:
            raise BadRequest("Timeout must not be negative")
        return cls(
            check_project(project), check_group(group), params, rebuild, timeout, params_given
        )


@dataclass(eq=False)
class Job:
    request: JobRequest
    id: str
    started_at_ns: int = field(default_factory=time.time_ns)
    future: asyncio.Future[BuildInfo] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    state: Literal["queued", "running", "done"] = "queued"
    abort_reason: str = ""
    container: str = ""
    task: asyncio.Task[int] | None = None
    log: LogSink | None = None
    # The build context read together with the id (issue 10), dropped once built.
    context: bytes = b""

    @property
    def project(self) -> str:
        return self.request.project

    @property
    def group(self) -> str:
        return self.request.group

    def __str__(self) -> str:
        # Job.String() of the original (spec §1.3)
        return f"{{project={self.project} group={self.group} id={self.id[:7]}}}"
