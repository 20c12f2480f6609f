"""The systemd unit starts mistryd with flags it has, as a notify service."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

from pazari.mistry.__main__ import parser

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "mistryd.service"


def test_unit_runs_mistryd_with_known_flags() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["Type"] == "notify"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/mistryd")
    env = dict(
        line.split("=", 1) for line in re.findall(r"^Environment=(\S+)$", UNIT.read_text(), re.M)
    )
    expanded = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in argv[1:]]
    args = parser().parse_args(expanded)
    assert (args.addr, args.config, args.filesystem) == (
        "0.0.0.0:8462", "/etc/pazari/mistry.json", "plain"
    )  # fmt: skip
    assert args.drain_timeout < float(service["TimeoutStopSec"])
