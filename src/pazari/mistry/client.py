"""``mistry build``: the original's client (spec §3): its flags, the dynamic-param table, its
output and exit codes (0 success, 1 any error). Transports: ``http`` (new, default: a tar
from ``GET /artifacts/<p>/<id>``), ``rsync`` (daemon module ``mistry``) and ``scp``."""

from __future__ import annotations

import argparse
import getpass
import http.client
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from pazari import __version__
from pazari.mistry import MISTRY_COMPAT_VERSION
from pazari.mistry.duration import parse_duration
from pazari.mistry.params import ParamError, expand_files, parse_params

TRANSPORTS = ("http", "rsync", "scp")


class ClientError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mistry", description="schedule build jobs at the mistry service"
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"mistry {MISTRY_COMPAT_VERSION}-pazari.{__version__}",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build",
        help="schedule a build and fetch its artifacts",
        epilog="example: mistry build --project yarn -- --lockfile=@yarn.lock --foo=bar "
        "--_ignored=true",
    )
    b.add_argument("--host", default="0.0.0.0", help="server host")
    b.add_argument("-p", "--port", default="8462", help="server port")
    b.add_argument("--project", default="", help="project name (required)")
    b.add_argument("-g", "--group", default="", help="group (enables the incremental cache)")
    b.add_argument("-v", "--verbose", action="store_true", help="print request, summary and logs")
    b.add_argument("--json-result", action="store_true", help="print the raw result JSON")
    b.add_argument("--rebuild", action="store_true", help="rebuild the image without its cache")
    b.add_argument("--timeout", default="60m", help='total time to wait (Go duration; "" = none)')
    b.add_argument("--build-timeout", default="", help="server-side build timeout (Go duration)")
    b.add_argument("--no-wait", action="store_true", help="schedule asynchronously; no download")
    b.add_argument("--transport", default="http", help=f"one of {', '.join(TRANSPORTS)}")
    b.add_argument("--transport-user", default=_username(), help="user for scp/ssh or rsync")
    b.add_argument("--transport-port", default="", help="port of the rsync daemon or ssh")
    b.add_argument("-t", "--target", default=".", help="local directory for the artifacts")
    b.add_argument("--clear-target", action="store_true", help="empty the target first")
    b.add_argument(
        "--token",
        default=os.environ.get("MISTRY_TOKEN", ""),
        help="bearer token for a server with auth (default $MISTRY_TOKEN)",
    )
    return parser


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Flags before the first ``--``, dynamic params after it."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    flags, dynamic = split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(flags)
    try:
        return build(args, dynamic)
    except ClientError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


def build(args: argparse.Namespace, dynamic: list[str]) -> int:
    verbose = args.verbose and not args.json_result
    if not args.host or not args.project or not args.target:
        raise ClientError("host, project and target must all be set")
    if not args.no_wait and not args.transport:
        raise ClientError("you need to either specify a transport or use the async flag")
    try:
        timeout = parse_duration(args.timeout) if args.timeout else None
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    if args.transport not in TRANSPORTS:
        raise ClientError(f"invalid transport argument ({args.transport})")
    try:
        params = expand_files(parse_params(dynamic))
    except ParamError as exc:
        raise ClientError(str(exc)) from None
    target = args.target[:-1] if args.target.endswith("/") and len(args.target) > 1 else args.target
    prepare_target(Path(target), verbose)

    base = f"http://{args.host}:{args.port}"
    body: dict[str, Any] = {
        "Project": args.project,
        "Params": params,
        "Group": args.group,
        "Rebuild": args.rebuild,
    }
    if args.build_timeout:
        body["Timeout"] = args.build_timeout
    url = f"{base}/jobs" + ("?async" if args.no_wait else "")
    if verbose:
        print(f"Request: POST {url} {orjson.dumps(body).decode()}")
    status, raw = post(url, orjson.dumps(body), timeout, args.token, args.timeout)
    if verbose:
        print(f"Response: {status} {raw.decode(errors='replace')}")
    if status == 503:
        raise ClientError("(error: 503) Server is overloaded; try again later")
    if status != 201:
        raise ClientError(
            f"(error: {status}) Error scheduling build: {raw.decode(errors='replace')}"
        )
    if args.no_wait:
        if verbose:
            print("Build scheduled successfully")
        return 0
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(f"could not decode the result: {exc}") from None
    if not args.json_result:
        print(f"Logs can be found at {base}/{info.get('URL', '')}")
    if verbose:
        print_summary(info)
    if args.json_result:
        print(raw.decode(errors="replace"))
    exit_code = int(info.get("ExitCode", -999))
    if exit_code != 0:
        stderr = info.get("ContainerStderr") or ""
        if stderr:
            print(f"Container error logs:\n {stderr}", file=sys.stderr)
        else:
            print("There are no container error logs.", file=sys.stderr)
        if info.get("ErrBuild"):
            print(info["ErrBuild"], file=sys.stderr)
        raise ClientError(f"Build failed with exit code {exit_code}")
    out = fetch(args, info, Path(target), base, timeout)
    print(out)
    return 0


def prepare_target(target: Path, verbose: bool) -> None:
    if not target.exists():
        if verbose:
            print(f"Target path ({target}) does not exist. Creating it..")
        try:
            target.mkdir(parents=True)
        except OSError as exc:
            raise ClientError(f"could not create target {target}: {exc}") from None
    elif not target.is_dir():
        raise ClientError(f"target {target} is not a directory")


def post(
    url: str, body: bytes, timeout: float | None, token: str, timeout_text: str
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except TimeoutError as exc:
        raise ClientError(f"The build did not finish after {timeout_text}, {exc}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise ClientError(f"The build did not finish after {timeout_text}, {exc}") from None
        raise ClientError(f"Error scheduling build: {exc.reason}") from None


def print_summary(info: dict[str, Any]) -> None:
    print(
        f"Result:\nStarted at: {info.get('StartedAt')} ExitCode: {info.get('ExitCode')} "
        f"Params: {info.get('Params')} Cached: {info.get('Cached')} "
        f"Coalesced: {info.get('Coalesced')}\n\nLogs:\n{info.get('ContainerStdouterr', '')}"
    )


def clear_target(target: Path) -> None:
    for entry in target.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def fetch(
    args: argparse.Namespace, info: dict[str, Any], target: Path, base: str, timeout: float | None
) -> str:
    """Download the artifacts; returns the transport's output (printed like the original)."""
    url_path = str(info.get("URL", ""))  # job/<p>/<id>
    parts = url_path.split("/")
    if len(parts) != 3 or parts[0] != "job":
        raise ClientError(f"unexpected job URL {url_path!r}")
    _, project, job_id = parts
    if args.transport == "http":
        if args.clear_target:
            clear_target(target)
        return fetch_http(
            f"{base}/artifacts/{project}/{job_id}", target, timeout, args.verbose, args.token
        )
    user = f"{args.transport_user}@" if args.transport_user else ""
    if args.transport == "rsync":
        # The module "mistry" is rooted at build_path; the source comes from the job URL
        # rather than a search for the project name inside Path (spec §8).
        src = f"{project}/ready/{job_id}/data/artifacts/"
        port = f":{args.transport_port}" if args.transport_port else ""
        # Issue 10, whatever the server sends: --safe-links drops links that are absolute
        # or leave the target, --chmod drops setuid/setgid bits; devices and fifos are not
        # copied without -D. (The server side: mistryd rsync-check, see README.)
        argv = ["rsync", "-rtlp", "--safe-links", "--chmod=ug-s"]
        argv += ["--delete"] if args.clear_target else []
        argv += [f"rsync://{user}{args.host}{port}/mistry/{src}", f"{target}/"]
    else:
        if args.clear_target:
            clear_target(target)
        argv = ["scp", "-r"] + (["-P", args.transport_port] if args.transport_port else [])
        argv += [f"{user}{args.host}:{info.get('Path')}/*", str(target)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClientError(f"{args.transport} failed: {exc}") from None
    output = (done.stdout + done.stderr).rstrip("\n")
    if done.returncode != 0:
        raise ClientError(f"{args.transport} failed (exit {done.returncode}): {output}")
    return output


def fetch_http(
    url: str, target: Path, timeout: float | None, verbose: bool, token: str = ""
) -> str:
    began = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as resp:
            count = extract_tar(resp, target)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()
        raise ClientError(f"(error: {exc.code}) could not fetch artifacts: {text}") from None
    except (urllib.error.URLError, tarfile.TarError, OSError, http.client.HTTPException) as exc:
        raise ClientError(f"could not fetch artifacts: {exc}") from None
    if not verbose:
        return ""
    return f"Fetched {count} files over http in {time.monotonic() - began:.2f}s"


def refuse_member(member: tarfile.TarInfo, target: Path) -> str:
    """Why ``member`` must not be extracted into ``target``, or "" (issue 10: whatever the
    server sends). tarfile's ``data`` filter (PEP 706) refuses most of these too; these
    checks name the member and what is wrong with it first."""
    name = member.name
    if name.startswith("/") or ".." in Path(name).parts:
        return f"{name!r}: path leaves the target"
    if member.ischr() or member.isblk():
        return f"{name!r}: device files are refused"
    if member.isfifo():
        return f"{name!r}: fifos are refused"
    if member.mode & (stat.S_ISUID | stat.S_ISGID):
        return f"{name!r}: setuid/setgid bits are refused"
    if member.issym() or member.islnk():
        link = member.linkname
        if link.startswith("/"):
            return f"{name!r}: absolute link to {link!r} is refused"
        base = Path(name).parent if member.issym() else Path()
        resolved = os.path.normpath(os.path.join(target, base, link))
        if os.path.commonpath([resolved, os.path.normpath(target)]) != os.path.normpath(target):
            return f"{name!r}: link to {link!r} leaves the target"
    return ""


def extract_tar(fileobj: Any, target: Path) -> int:
    """Extract a streamed tar into ``target``: every member checked by ``refuse_member``,
    then extracted with the ``data`` filter. Returns the number of regular files."""
    count = 0
    with tarfile.open(fileobj=fileobj, mode="r|", errors="surrogateescape") as tar:
        for member in tar:
            why = refuse_member(member, target)
            if why:
                raise ClientError(f"refusing the artifacts: {why}")
            try:
                tar.extract(member, target, filter="data")
            except tarfile.FilterError as exc:
                raise ClientError(f"refusing the artifacts: {exc}") from None
            count += member.isfile()
    return count


if __name__ == "__main__":
    sys.exit(main())
