"""mistryd's config keeps the original's configs working (issue 10): its sample config as
it is, keys matched case-insensitively as Go's encoding/json did, the keys it ignored
accepted with one warning line; any other key still exits 2 naming it."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pazari.mistry.config import load_mistry_config
from tests.mistry.conftest import MISTRYD

# cmd/mistryd/config.sample.json and config.test.json of skroutz/mistry at f7b47b9
SAMPLE = """{
  "projects_path": "/var/lib/mistry/projects",
  "build_path": "/var/lib/mistry/data",
  "job_concurrency": 5,
  "job_backlog": 20
}
"""
TEST_CONFIG = """{
  "projects_path": "testdata/projects",
  "build_path": "/tmp",
  "mounts": {
    "/tmp": "/tmp"
  },
  "job_concurrency": 5,
  "job_backlog": 100
}
"""


def write(tmp_path: Path, doc: dict[str, Any] | str) -> str:
    path = tmp_path / "config.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_sample_config_as_is(tmp_path: Path) -> None:
    # The paths are the packaged ones: substituted only because they do not exist here.
    text = SAMPLE.replace("/var/lib/mistry", str(tmp_path))
    (tmp_path / "projects").mkdir()
    (tmp_path / "data").mkdir()
    config = load_mistry_config(write(tmp_path, text))
    assert (config.job_concurrency, config.job_backlog) == (5, 20)
    assert config.projects_path == f"{tmp_path}/projects"


def test_sample_config_verbatim_fails_only_on_missing_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        load_mistry_config(write(tmp_path, SAMPLE))
    assert exit_.value.code == 2
    assert "$.projects_path: /var/lib/mistry/projects does not exist" in capsys.readouterr().err


def test_the_originals_test_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "testdata" / "projects").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = load_mistry_config(write(tmp_path, TEST_CONFIG))
    assert config.mounts == {"/tmp": "/tmp"} and config.job_backlog == 100


CASE_KEYS = [
    ("UID", "uid", "1234"),
    ("Uid", "uid", "1234"),
    ("Addr", "addr", "127.0.0.1:9"),
    ("PROJECTS_PATH", "projects_path", None),
    ("Build_Path", "build_path", None),
    ("Mounts", "mounts", {"/a": "/b"}),
    ("JOB_CONCURRENCY", "job_concurrency", 3),
    ("Job_Backlog", "job_backlog", 7),
]


@pytest.mark.parametrize(("key", "field", "value"), CASE_KEYS, ids=[k for k, _, _ in CASE_KEYS])
def test_keys_match_case_insensitively(tmp_path: Path, key: str, field: str, value: Any) -> None:
    doc: dict[str, Any] = {"projects_path": str(tmp_path), "build_path": str(tmp_path)}
    doc.pop(field, None)
    doc[key] = value if value is not None else str(tmp_path)
    config = load_mistry_config(write(tmp_path, doc))
    assert getattr(config, field) == doc[key]


def test_last_spelling_wins_as_in_go(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        f'{{"projects_path": "{tmp_path}", "build_path": "{tmp_path}", "uid": "1", "UID": "2"}}'
    )
    assert load_mistry_config(str(path)).uid == "2"


IGNORED = ["ProjectsPath", "BuildPath", "Concurrency", "Backlog", "FileSystem", "bind_mounts",
           "!()#@_!mounts"]  # fmt: skip


def test_ignored_keys_give_one_warning_naming_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc: dict[str, Any] = {"projects_path": str(tmp_path), "build_path": str(tmp_path)}
    doc.update({key: "x" for key in IGNORED})
    with caplog.at_level(logging.WARNING):
        config = load_mistry_config(write(tmp_path, doc))
    assert config.projects_path == str(tmp_path)  # ProjectsPath did not override it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for key in IGNORED:
        assert key in warnings[0]


@pytest.mark.parametrize("key", ["x", "project_path", "auth-tokens", "Retention_X"])
def test_unknown_key_exits_2_naming_it(tmp_path: Path, key: str) -> None:
    doc = {"projects_path": str(tmp_path), "build_path": str(tmp_path), key: 1}
    done = subprocess.run(
        [MISTRYD, "--config", write(tmp_path, doc)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"$.{key}: unknown key" in done.stderr
