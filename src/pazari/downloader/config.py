"""The downloader's JSON config (spec §5), loaded strictly by the shared runtime.

One file serves the three components; each checks the sections it needs at startup
(``require_*``). Beyond the original: safe download defaults (overall timeout, maximum file
size, redirect limit), the SSRF switch ``allow_private_networks``, a global concurrency cap,
in-flight leases, callback attempts/backoff and per-destination HMAC secrets.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

#: Backends the notifier knows (spec §4); any other name is a config error at startup
#: (the original crashed on a nil pointer, limitation 9).
KNOWN_BACKENDS = ("http", "kafka")


@dataclass
class RedisConfig:
    addr: str = "127.0.0.1:6379"
    sentinel: list[str] = field(default_factory=list)
    master_name: str = ""
    db: int = 0
    # Redis Cluster (issue 16), opt-in: seed nodes "host:port" and the number of shards the
    # process-wide queues are split into (pazari.downloader.layout). Every component and
    # `downloader migrate-layout` must use the same cluster_shards.
    cluster: bool = False
    cluster_nodes: list[str] = field(default_factory=list)
    cluster_shards: int = 16

    def url(self) -> str:
        return f"redis://{self.addr}/{self.db}"

    def validate(self) -> tuple[str, str] | None:
        if not self.cluster:
            return None
        if not self.cluster_nodes:
            return "cluster_nodes", "is required when cluster is true (seed \"host:port\" list)"
        for i, addr in enumerate(self.cluster_nodes):
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                return f"cluster_nodes[{i}]", f"must be \"host:port\", not {addr!r}"
        if self.sentinel or self.master_name:
            return "cluster", "cannot be combined with sentinel"
        if self.db != 0:
            return "db", "must be 0 with Redis Cluster (it has only database 0)"
        if not 1 <= self.cluster_shards <= 256:
            return "cluster_shards", "must be between 1 and 256"
        return None


@dataclass
class ApiConfig:
    heartbeat_path: str = ""


@dataclass
class FileStorageConfig:
    type: str = "filesystem"
    rootdir: str = ""
    bucket: str = ""
    region: str = ""

    def validate(self) -> tuple[str, str] | None:
        if self.type not in ("filesystem", "s3"):
            return "type", f"unsupported file storage {self.type!r} ('filesystem' or 's3')"
        if self.type == "s3" and not self.bucket:
            return "bucket", "is required for the s3 file storage"
        return None


@dataclass
class ProcessorConfig:
    storage_dir: str = ""
    filestorage: FileStorageConfig | None = None
    request_headers: dict[str, str] = field(default_factory=dict)
    stats_interval: int = 5000  # ms
    download_url: str = ""
    # Safe defaults the original lacked (limitation 3); a job's download_timeout wins.
    timeout: float = 600.0
    max_file_size: int = 2 << 30
    max_redirects: int = 10
    connect_timeout: float = 5.0
    read_timeout: float = 60.0  # longest silence between two body chunks
    allow_private_networks: bool = False
    allowed_networks: list[str] = field(default_factory=list)  # CIDRs exempt from the guard
    allow_insecure_redirects: bool = False  # follow https -> http redirects
    # A job reclaimed from a dead processor's lease more often than this fails (issue 11).
    max_reclaims: int = 3
    # The longest Retry-After (429/503) honoured, seconds: the job's retry and its
    # aggregation's next jobs wait that long at most.
    max_retry_after: float = 3600.0
    max_concurrency: int = 1000  # global cap across aggregations
    scan_interval: float = 3.0
    poll_interval: float = 1.0
    # The original held 300 s and renewed only when idle; a short lease renewed every
    # third of it keeps a busy aggregation and frees a crashed processor's soon.
    aggregation_lease: int = 30
    inflight_lease: float = 30.0
    retry_backoff: float = 120.0  # seconds * DownloadCount
    default_aggr_limit: int = 4
    default_max_retries: int = 2
    disk_check_interval: float = 60.0
    disk_high: float = 95.0
    disk_low: float = 90.0
    # How a downloaded file is made durable before the job is reported (spec §3 step 8):
    # "batch" group-commits the files finishing together with one syncfs of storage_dir's
    # filesystem (a volume of its own, as recommended); "file" fsyncs each file, as the
    # original did, for storage that shares a filesystem with heavy writers.
    sync: str = "batch"

    def validate(self) -> tuple[str, str] | None:
        if self.sync not in ("batch", "file"):
            return "sync", f"must be \"batch\" or \"file\", not {self.sync!r}"
        positive = ("timeout", "max_file_size", "max_concurrency", "scan_interval",
                    "poll_interval", "aggregation_lease", "inflight_lease",
                    "default_aggr_limit", "disk_check_interval", "stats_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                return name, "must be greater than 0"
        if self.max_redirects < 0:
            return "max_redirects", "must not be negative"
        if self.max_reclaims < 0:
            return "max_reclaims", "must not be negative"
        if self.max_retry_after < 0:
            # 0 is meaningful: Retry-After is not honoured at all.
            return "max_retry_after", "must not be negative"
        for i, cidr in enumerate(self.allowed_networks):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                return f"allowed_networks[{i}]", str(exc)
        if not self.disk_low <= self.disk_high:
            return "disk_low", "must not exceed disk_high"
        return None

    @property
    def rootdir(self) -> str:
        if self.filestorage is not None and self.filestorage.rootdir:
            return self.filestorage.rootdir
        return self.storage_dir


@dataclass
class NotifierConfig:
    concurrency: int = 0
    stats_interval: int = 5000  # ms (the original ignored it, limitation 9)
    deletion_interval: int = 0  # minutes
    max_attempts: int = 2
    retry_backoff: float = 600.0  # seconds * CallbackCount
    poll_interval: float = 1.0
    inflight_lease: float = 60.0
    # Destination → HMAC-SHA256 secret: an origin with an optional path prefix (matched
    # exactly, pazari.downloader.signing) or a Kafka topic.
    signing_secrets: dict[str, str] = field(default_factory=dict)
    signature_header: str = "X-Downloader-Signature"
    timestamp_header: str = "X-Downloader-Timestamp"
    # The SSRF guard on callback destinations, with the processor's meaning (issue 11).
    allow_private_networks: bool = False
    allowed_networks: list[str] = field(default_factory=list)
    allow_insecure_redirects: bool = False
    max_redirects: int = 10  # Go's client.Post follows 10

    def validate(self) -> tuple[str, str] | None:
        from pazari.downloader.signing import validate_keys

        bad = validate_keys(self.signing_secrets)
        if bad is not None:
            return "signing_secrets", bad
        for i, cidr in enumerate(self.allowed_networks):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                return f"allowed_networks[{i}]", str(exc)
        if self.max_redirects < 0:
            return "max_redirects", "must not be negative"
        if self.max_attempts < 1:
            return "max_attempts", "must be at least 1"
        if self.poll_interval <= 0 or self.inflight_lease <= 0:
            return "poll_interval", "intervals must be greater than 0"
        return None


@dataclass
class Config:
    redis: RedisConfig = field(default_factory=RedisConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    notifier: NotifierConfig = field(default_factory=NotifierConfig)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> tuple[str, str] | None:
        for name in self.backends:
            if name not in KNOWN_BACKENDS:
                return f"backends.{name}", f"unknown backend (known: {', '.join(KNOWN_BACKENDS)})"
        return None

    def enabled_backends(self) -> dict[str, dict[str, Any]]:
        # An entry with an empty map is skipped, as in the original (spec §4).
        return {k: v for k, v in self.backends.items() if v}


def require_processor(cfg: Config) -> tuple[str, str] | None:
    """The processor's startup checks (spec §3 Startup); (json path, message) on failure."""
    p = cfg.processor
    if not p.storage_dir:
        return "$.processor.storage_dir", "is required"
    if not p.download_url:
        return "$.processor.download_url", "Could not parse Download URL, empty"
    from pazari.downloader.validate import parse_request_uri

    err = parse_request_uri(p.download_url)
    if err is not None:
        return "$.processor.download_url", f"Could not parse Download URL, {err}"
    return None


def require_notifier(cfg: Config) -> tuple[str, str] | None:
    n = cfg.notifier
    if n.concurrency <= 0:
        return "$.notifier.concurrency", "must be greater than 0"
    if n.deletion_interval <= 0:
        return ("$.notifier.deletion_interval",
                "must be greater than 0: minutes a delivered job's file is kept before the "
                "reaper deletes it")
    if not cfg.enabled_backends():
        return "$.backends", "No backends are enabled, at least one is required"
    return None


def test_time() -> bool:
    """``DOWNLOADER_TEST_TIME`` turns every backoff unit into 200 ms (spec §5)."""
    return bool(os.environ.get("DOWNLOADER_TEST_TIME"))


#: Keys the original's own files carry and its code never read (spec §5; issue 11): they
#: load with one warning naming them, while a key nobody knows stays an error. The README's
#: and config.json.sample's ``notifier.download_url`` predates PR #31, which moved it to the
#: processor: it is used as ``processor.download_url`` when that is not set.
IGNORED_KEYS = (("notifier", "download_url"),)


def load(path: str) -> Config:
    """Load ``path`` strictly, after taking out (and naming, in one warning line) the keys
    the original ignored."""
    from pazari.runtime.config import from_json, read_json
    from pazari.runtime.logs import get_logger

    file = str(path)
    data = read_json(path)
    ignored: list[str] = []
    if isinstance(data, dict):
        for section, key in IGNORED_KEYS:
            values = data.get(section)
            if isinstance(values, dict) and key in values:
                value = values.pop(key)
                ignored.append(f"$.{section}.{key}")
                if (section, key) == ("notifier", "download_url"):
                    proc = data.setdefault("processor", {})
                    if isinstance(proc, dict) and not proc.get("download_url"):
                        proc["download_url"] = value
    if ignored:
        get_logger("downloader.config").warning(
            "%s: ignoring keys the original ignored: %s", file, ", ".join(ignored))
    return from_json(data, Config, file=file)
