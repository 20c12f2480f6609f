"""``POST /download`` validation with the original's exact 400 messages (spec §1 table).

The body is decoded as Go's ``json.Unmarshal`` into ``map[string]interface{}`` would: numbers
are float64 (so ``"4"`` is not a number and ``4.9`` truncates to 4), ``null`` is ``<nil>``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from pazari.downloader.job import Aggregation, Job
from pazari.downloader.proxies import InvalidProxy, parse_proxy
from pazari.mime import InvalidMimePattern, parse_mime_any, parse_mime_patterns
from pazari.mime.errors import go_quote


class Invalid(Exception):
    """A validation failure; ``str()`` is the message after ``... to Job: ``."""


def _parse_error(raw: str, msg: str) -> str:
    return f"parse {go_quote(raw)}: {msg}"


_PORT = re.compile(r":[0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # Go's stringContainsCTLByte
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")


def parse_request_uri(raw: str) -> str | None:
    """Go ``url.ParseRequestURI``: None when valid, else Go's error text."""
    if raw == "":
        return _parse_error(raw, "empty url")
    if _CONTROL.search(raw) is not None:
        return _parse_error(raw, "net/url: invalid control character in URL")
    rest = raw
    scheme = ""
    # Go's getScheme: letters, then letters, digits, "+-."; a ":" first is an error, any
    # other character ends the scan with no scheme.
    if raw[0] == ":":
        return _parse_error(raw, "missing protocol scheme")
    m = _SCHEME.match(raw)
    if m is not None:
        scheme, rest = raw[: m.end() - 1], raw[m.end():]
    if "?" in rest:
        rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        if scheme:
            return None  # opaque (e.g. "mailto:x")
        return _parse_error(raw, "invalid URI for request")
    path = rest
    if scheme and rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        path = slash + tail
        err = _check_authority(authority)
        if err is not None:
            return _parse_error(raw, err)
    return _check_escapes(raw, path)


def _check_authority(authority: str) -> str | None:
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return "missing ']' in host"
        port = host[end + 1:]
        if port and not _PORT.fullmatch(port):
            return f"invalid port {go_quote(port)} after host"
        return None
    if ":" in host:
        port = host[host.rfind(":"):]
        if not _PORT.fullmatch(port):
            return f"invalid port {go_quote(port)} after host"
        host = host[: host.rfind(":")]
    for c in host:
        if c in " <>\"{}|\\^`":
            return f"invalid character {go_quote(c)} in host name"
    return _bad_escape(host)


_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _bad_escape(s: str) -> str | None:
    m = _ESCAPE.search(s)
    if m is None:
        return None
    return f"invalid URL escape {go_quote(s[m.start():m.start() + 3])}"


def _check_escapes(raw: str, path: str) -> str | None:
    err = _bad_escape(path)
    return None if err is None else _parse_error(raw, err)


def go_type(v: Any) -> str:
    """Go's ``%T`` of a value decoded into ``interface{}``."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    return "map[string]interface {}"


def go_value(v: Any) -> str:
    """Go's ``%v`` of a decoded JSON value (float64 prints like strconv 'g')."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        f = float(v)
        if f.is_integer() and abs(f) < 1e21:
            return str(int(f))
        return repr(f)
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "[" + " ".join(go_value(x) for x in v) + "]"
    return "map[" + " ".join(f"{k}:{go_value(x)}" for k, x in sorted(v.items())) + "]"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def decode_body(raw: bytes) -> dict[str, Any]:
    """JSON object or Invalid with Go's encoding/json message."""
    text = raw.strip()
    if not text:
        raise Invalid("unexpected end of JSON input")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        first = text[:1].decode(errors="replace")
        if first not in '{["-0123456789tfn':
            raise Invalid(
                f"invalid character {_go_char(first)} looking for beginning of value") from None
        raise Invalid("unexpected end of JSON input") from None
    if not isinstance(doc, dict):
        raise Invalid(f"json: cannot unmarshal {_json_kind(doc)} into Go value of type "
                      "map[string]interface {}")
    return doc


def _go_char(c: str) -> str:
    return "'\\''" if c == "'" else f"'{c}'"


def _json_kind(v: Any) -> str:
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    return "number"


def parse_job(doc: dict[str, Any]) -> Job:
    """The Job parser (step 1); raises Invalid with the original's messages."""
    job = Job()
    url = doc.get("url")
    if not isinstance(url, str):
        raise Invalid("URL must be a string")
    err = parse_request_uri(url)
    if err is not None:
        raise Invalid(f"Could not parse URL: {err}")
    job.url = url

    aggr_id = doc.get("aggr_id")
    if not isinstance(aggr_id, str):
        raise Invalid("aggr_id must be a string")
    if aggr_id == "":
        raise Invalid("aggr_id cannot be empty")
    job.aggr_id = aggr_id

    bucket, region = doc.get("s3_bucket"), doc.get("s3_region")
    has_bucket = isinstance(bucket, str) and bucket != ""
    has_region = isinstance(region, str) and region != ""
    if has_region and not has_bucket:
        raise Invalid("s3_region provided without an s3_bucket")
    if has_bucket and not has_region:
        raise Invalid("s3_bucket provided without an s3_region")
    if has_bucket:
        job.s3_bucket, job.s3_region = str(bucket), str(region)

    _parse_callback(doc, job, has_bucket)

    extra = doc.get("extra")
    if isinstance(extra, str):  # a non-string extra is silently ignored (spec §1)
        job.extra = extra

    if "mime_type" in doc:
        mime = doc["mime_type"]
        if not isinstance(mime, str):
            raise Invalid("MimeType pattern must be a string")
        try:
            parse_mime_patterns(mime)
        except InvalidMimePattern as exc:
            raise Invalid(str(exc)) from None
        job.mime_type = mime

    if "mime_type_any" in doc:
        patterns = doc["mime_type_any"]
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise Invalid("mime_type_any must be an array of strings")
        try:
            parse_mime_any(patterns)
        except InvalidMimePattern as exc:
            raise Invalid(str(exc)) from None
        job.mime_type_any = list(patterns)

    if "max_retries" in doc:
        mr = doc["max_retries"]
        if not _number(mr):
            raise Invalid(f"Max retries must be a number, was: {go_type(mr)}")
        n = math.trunc(mr)
        if n < 0:
            raise Invalid("Max retries must not be negative")
        job.max_retries = n

    if "extract_image_size" in doc:
        eis = doc["extract_image_size"]
        if not isinstance(eis, bool):
            raise Invalid("ExtractImageSize must be a boolean")
        job.extract_image_size = eis

    if "download_timeout" in doc:
        dt = doc["download_timeout"]
        if not _number(dt):
            raise Invalid("Download timeout must be a number")
        t = math.trunc(dt)
        if t <= 0:
            raise Invalid("Download timeout must be greater than 0")
        job.download_timeout = t

    if "request_headers" in doc:
        rh = doc["request_headers"]
        if not isinstance(rh, dict):
            raise Invalid("request_headers must be a dictionary")
        for value in rh.values():
            if not isinstance(value, str):
                raise Invalid("Values of request headers keys must be either strings or "
                              f"ints.Given value is {go_value(value)}")
        job.request_headers = dict(rh)
    return job


def _parse_callback(doc: dict[str, Any], job: Job, has_bucket: bool) -> None:
    cb_url = doc.get("callback_url")
    if isinstance(cb_url, str):
        err = parse_request_uri(cb_url)
        if err is not None:
            raise Invalid(f"Could not parse callback URL: {err}")
        if cb_url:
            # A legacy callback_url wins; type/dst are not even parsed (spec §1).
            job.callback_url = cb_url
            job.callback_type = "http"
            job.callback_dst = cb_url
            return
    cb_type, cb_dst = doc.get("callback_type"), doc.get("callback_dst")
    if not isinstance(cb_type, str):
        if not has_bucket:
            raise Invalid("callback_type must be a string")
        cb_type = ""
    if not isinstance(cb_dst, str):
        if not has_bucket:
            raise Invalid("callback_dst must be a string")
        cb_dst = ""
    if (cb_type == "" or cb_dst == "") and not has_bucket:
        raise Invalid(f"You need to provide both callback_type ({go_quote(cb_type)}) "
                      f"and callback_dst ({go_quote(cb_dst)})")
    if cb_dst.startswith("http"):
        err = parse_request_uri(cb_dst)
        if err is not None:
            raise Invalid(f"Could not parse URL: {err}")
    job.callback_type, job.callback_dst = cb_type, cb_dst


def parse_aggregation(doc: dict[str, Any]) -> Aggregation:
    """The Aggregation parser (step 3). The original also read the client's ``expiresAt``
    into the lease (a quirk); it is ignored here."""
    aggr_id = doc.get("aggr_id")
    if not isinstance(aggr_id, str):
        raise Invalid("Aggregation ID must be a string")
    if aggr_id == "":
        raise Invalid("Aggregation ID cannot be empty")
    limit = doc.get("aggr_limit")
    if not isinstance(limit, int | float) or isinstance(limit, bool):
        raise Invalid("Aggregation limit must be a number")
    n = math.trunc(limit)
    if n <= 0:
        raise Invalid("Aggregation limit must be greater than 0")
    proxy = ""
    if "aggr_proxy" in doc:
        p = doc["aggr_proxy"]
        if not isinstance(p, str):
            raise Invalid("Aggregation proxy must be a string")
        if p:
            err = parse_request_uri(p)
            if err is not None:
                raise Invalid(f"Aggregation proxy must be a valid URI: {err}")
            try:
                # The processor's own parser (issue 11): a proxy it cannot use is a 400
                # here, not an aggregation stuck Pending.
                parse_proxy(p)
            except InvalidProxy as exc:
                raise Invalid(f"Aggregation proxy cannot be used: {exc}") from None
        proxy = p
    rate = 0.0
    if "aggr_rate" in doc:  # beyond the original: requests per second (token bucket)
        r = doc["aggr_rate"]
        if not _number(r):
            raise Invalid("Aggregation rate must be a number")
        if r <= 0:
            raise Invalid("Aggregation rate must be greater than 0")
        rate = float(r)
    return Aggregation(id=aggr_id, limit=n, proxy=proxy, rate=rate)
