"""The shared daemon runtime: every pazari daemon starts, configures, logs, exposes metrics,
talks to systemd and stops the same way.

A daemon's ``__main__`` builds an argument parser with :func:`cli.base_parser`, loads its
config with :func:`config.load_config` and hands a :class:`service.Service` to
:func:`service.run`.
"""

from pazari.runtime.cli import base_parser
from pazari.runtime.config import ConfigError, load_config
from pazari.runtime.logs import get_logger, setup_logging
from pazari.runtime.metrics import MetricsServer, debug_vars, metrics_routes
from pazari.runtime.notify import sd_notify
from pazari.runtime.service import Service, run

__all__ = [
    "ConfigError",
    "MetricsServer",
    "Service",
    "base_parser",
    "debug_vars",
    "get_logger",
    "load_config",
    "metrics_routes",
    "run",
    "sd_notify",
    "setup_logging",
]
