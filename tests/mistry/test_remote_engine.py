"""mistry on remote and several engines (issue 16). Over TLS: ``docker_host: tcp://HOST:PORT`` with
``docker_tls_ca``/``docker_tls_cert``/``docker_tls_key``, as the Docker CLI's
``--tlsverify`` uses them.

podman's own TCP listener has no TLS, so the engine is the session's podman behind socat,
a TLS terminator that requires a client certificate signed by the test's CA (made by
openssl here). A build and its artifacts go through it; a mistryd without the client
certificate, or trusting another CA, gets no engine. Several engines: each project is
built on the one its name hashes to (rendezvous hashing), shown with two podman services.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pazari.mistry.engine import Engine, Engines
from tests.mistry.conftest import MistryFactory
from tests.support.daemon import Daemon
from tests.support.ports import free_port, wait_for
from tests.support.services import DockerEngine, podman_engine


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def _signed(directory: Path, ca: str, name: str, ext: str) -> None:
    (directory / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed: apt-get install -y openssl")
    directory = tmp_path_factory.mktemp("tls")
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _signed(directory, "ca", "engine", "subjectAltName=IP:127.0.0.1\n"
            "extendedKeyUsage=serverAuth\n")
    _signed(directory, "ca", "client", "extendedKeyUsage=clientAuth\n")
    return directory


@pytest.fixture(scope="module")
def tls_engine(certs: Path, docker_engine: DockerEngine) -> Iterator[str]:
    """``tcp://127.0.0.1:PORT``: socat terminating TLS (client certificate required) in
    front of podman's Docker API socket."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is needed: apt-get install -y socat")
    port = free_port()
    sock = docker_engine.url.removeprefix("unix://")
    listen = (f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,"
              f"cert={certs / 'engine.pem'},key={certs / 'engine.key'},"
              f"cafile={certs / 'ca.pem'},verify=1")
    with Daemon([socat, listen, f"UNIX-CONNECT:{sock}"], ready="none",
                name="socat-tls") as proc:
        def listening() -> bool:
            import socket

            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, 20, "socat listening", alive=lambda: proc.running)
        yield f"tcp://127.0.0.1:{port}"


def _tls(certs: Path, ca: str = "ca", client: bool = True) -> dict[str, str]:
    doc = {"docker_tls_ca": str(certs / f"{ca}.pem")}
    if client:
        doc |= {"docker_tls_cert": str(certs / "client.pem"),
                "docker_tls_key": str(certs / "client.key")}
    else:  # a pair the engine's CA never signed
        doc |= {"docker_tls_cert": str(certs / "other-ca.pem"),
                "docker_tls_key": str(certs / "other-ca.key")}
    return doc


@pytest.mark.slow
def test_build_and_artifacts_through_a_tls_engine(
    mistry_factory: MistryFactory, tls_engine: str, certs: Path, tmp_path: Path
) -> None:
    mistry = mistry_factory({"docker_host": tls_engine, **_tls(certs)})
    mistry.project("remote", "echo built-remotely > /data/artifacts/out.txt\n")
    result = mistry.client("--project", "remote", "--target", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "out.txt").read_text() == "built-remotely\n"
    resp = mistry.get("/index/", {"Accept": "application/json"})
    assert resp.status == 200


@pytest.mark.parametrize(("ca", "client"), [("other-ca", True), ("ca", False)],
                         ids=["engine-cert-not-trusted", "client-cert-not-accepted"])
def test_a_tls_engine_refuses_or_is_refused(
    mistry_factory: MistryFactory, tls_engine: str, certs: Path, ca: str, client: bool
) -> None:
    """Verification both ways: mistryd trusts only its CA, the engine only its clients."""
    mistry = mistry_factory({"docker_host": tls_engine, **_tls(certs, ca, client)})
    mistry.project("remote", "true\n")
    resp = mistry.post({"project": "remote", "params": {}})
    assert resp.status == 500, resp.text
    assert "ssl" in resp.text.lower(), resp.text  # the build's error names the TLS failure


@pytest.mark.parametrize(("overrides", "key"), [
    ({"docker_tls_ca": "/nonexistent/ca.pem"}, "docker_tls_ca"),
    ({"docker_host": "unix:///run/x.sock", "docker_tls_ca": __file__,
      "docker_tls_cert": __file__, "docker_tls_key": __file__}, "docker_host"),
    # engines replaces docker_host (write_config sets one): both at once is refused
    ({"engines": [{"docker_host": "unix:///run/x.sock"}]}, "engines"),
    ({"docker_host": "", "engines": [{"docker_host": "unix:///run/x.sock",
      "docker_tls_ca": __file__, "docker_tls_cert": __file__, "docker_tls_key": __file__}]},
     "engines[0].docker_host"),
], ids=["tls_ca_missing", "tls_on_unix_socket", "engines_and_docker_host",
        "tls_on_unix_socket_in_engines"])
def test_tls_config_errors(mistry_factory: MistryFactory, overrides: dict[str, Any],
                           key: str) -> None:
    mistry = mistry_factory(overrides, wait_ready=False)
    assert mistry.daemon.wait_exit(30) == 2
    assert key in mistry.daemon.logs()


@pytest.fixture(scope="module")
def second_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    with podman_engine(tmp_path_factory.mktemp("podman2")) as engine:
        yield engine


def _built_on(engine: DockerEngine, project: str) -> bool:
    docs = engine.client().call("GET", "/images/json") or []
    return any(f"mistry-{project}" in (tag or "") for d in docs for tag in d.get("RepoTags") or [])


def test_rendezvous_routing_is_stable_and_spreads() -> None:
    """Adding an engine moves only the projects that now hash to it."""
    two = Engines([Engine("unix:///a.sock"), Engine("unix:///b.sock")])
    three = Engines([*two, Engine("unix:///c.sock")])
    projects = [f"p{i}" for i in range(300)]
    first = {p: two.for_project(p).url for p in projects}
    assert {two.for_project(p).url for p in projects} == {"unix:///a.sock", "unix:///b.sock"}
    assert first == {p: two.for_project(p).url for p in projects}  # deterministic
    moved = [p for p in projects if three.for_project(p).url != first[p]]
    assert all(three.for_project(p).url == "unix:///c.sock" for p in moved)
    assert 50 < len(moved) < 150  # about a third


@pytest.mark.slow
def test_projects_are_routed_to_one_of_two_engines(
    mistry_factory: MistryFactory, docker_engine: DockerEngine, second_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    engines = [docker_engine, second_engine]
    mistry = mistry_factory({"docker_host": "",
                             "engines": [{"docker_host": e.url} for e in engines]})
    routing = Engines([Engine(e.url) for e in engines])
    names = [f"route{i}" for i in range(6)]
    for name in names:
        mistry.project(name, f"echo {name} > /data/artifacts/who\n")
        result = mistry.client("--project", name, "--target", str(tmp_path / name))
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / name / "who").read_text() == f"{name}\n"
    for name in names:
        chosen = routing.for_project(name).url
        for engine in engines:
            assert _built_on(engine, name) == (engine.url == chosen), (name, engine.url)
    assert {routing.for_project(n).url for n in names} == {e.url for e in engines}
