"""The ``mime_type`` rules: comma split, trim, ``!`` negation, AND; ``mime_type_any`` (OR)."""

from __future__ import annotations

import pytest

from pazari.mime import (
    BadPattern,
    InvalidMimePattern,
    check_any,
    parse_mime_any,
    parse_mime_patterns,
)

# (id, spec, mime, expected failure text or None)
CHECKS: list[tuple[str, str, str, str | None]] = [
    ("empty-spec-no-check", "", "application/pdf", None),
    ("glob-pass", "image/*", "image/png", None),
    (
        "glob-fail",
        "image/*",
        "application/pdf",
        "Expected mime-type to be (image/*), found (application/pdf)",
    ),
    (
        "bare-star-never-matches",
        "*",
        "image/png",
        "Expected mime-type to be (*), found (image/png)",
    ),
    ("negated-pass", "!image/vnd.adobe.photoshop", "image/png", None),
    (
        "negated-fail",
        "!image/vnd.adobe.photoshop",
        "image/vnd.adobe.photoshop",
        "Expected mime-type not to be (image/vnd.adobe.photoshop)"
        " found - (image/vnd.adobe.photoshop)",
    ),
    ("typical-usage-pass", "!image/vnd.adobe.photoshop,image/*", "image/jpeg", None),
    (
        "typical-usage-first-failure",
        "!image/vnd.adobe.photoshop,image/*",
        "application/zip",
        "Expected mime-type to be (image/*), found (application/zip)",
    ),
    ("trimmed", "  image/* ,\t!image/gif ", "image/png", None),
    (
        "and-of-positives-never-passes",
        "image/png,image/jpeg",
        "image/png",
        "Expected mime-type to be (image/jpeg), found (image/png)",
    ),
    (
        "trailing-comma-always-fails",
        "image/*,",
        "image/png",
        "Expected mime-type to be (), found (image/png)",
    ),
    ("negated-empty-passes", "image/*,!", "image/png", None),
    (
        "empty-body",
        "image/*",
        "application/x-empty",
        "Expected mime-type to be (image/*), found (application/x-empty)",
    ),
]


@pytest.mark.parametrize(
    ("spec", "mime", "failure"), [pytest.param(s, m, f, id=i) for i, s, m, f in CHECKS]
)
def test_check(spec: str, mime: str, failure: str | None) -> None:
    assert parse_mime_patterns(spec).check(mime) == failure


# (id, spec, API 400 text): the original formats the pattern with Go's %q.
INVALID: list[tuple[str, str, str]] = [
    ("empty-class", "[]a]", 'Invalid MimeType Pattern, "[]a]"'),
    ("trailing-backslash", "\\", 'Invalid MimeType Pattern, "\\\\"'),
    ("unclosed", "image/[png", 'Invalid MimeType Pattern, "image/[png"'),
    ("negated-and-trimmed", " !image/[", 'Invalid MimeType Pattern, "image/["'),
    ("second-part", "image/*, [-x]", 'Invalid MimeType Pattern, "[-x]"'),
    ("quote-escaped", '"[', 'Invalid MimeType Pattern, "\\"["'),
]


@pytest.mark.parametrize(("spec", "message"), [pytest.param(s, m, id=i) for i, s, m in INVALID])
def test_invalid(spec: str, message: str) -> None:
    with pytest.raises(InvalidMimePattern) as info:
        parse_mime_patterns(spec)
    assert str(info.value) == message
    assert isinstance(info.value, BadPattern)


ANY: list[tuple[str, list[str], str, str | None]] = [
    ("empty-list-no-check", [], "text/html", None),
    ("or-first", ["image/png", "image/jpeg"], "image/png", None),
    ("or-second", ["image/png", "image/jpeg"], "image/jpeg", None),
    (
        "or-none",
        ["image/png", "image/jpeg"],
        "image/gif",
        "Expected mime-type to be one of (image/png, image/jpeg), found (image/gif)",
    ),
    ("negated-entry", ["image/*", "!video/*"], "text/plain", None),
    ("trimmed", ["  image/* "], "image/webp", None),
]


@pytest.mark.parametrize(
    ("patterns", "mime", "failure"), [pytest.param(p, m, f, id=i) for i, p, m, f in ANY]
)
def test_check_any(patterns: list[str], mime: str, failure: str | None) -> None:
    assert check_any(patterns, mime) == failure
    assert parse_mime_any(patterns).check(mime) == failure


def test_check_any_validates() -> None:
    with pytest.raises(InvalidMimePattern) as info:
        parse_mime_any(["image/*", "[]a]"])
    assert str(info.value) == 'Invalid MimeType Pattern, "[]a]"'


@pytest.mark.parametrize(
    ("spec", "truthy"),
    [
        pytest.param("", False, id="empty"),
        pytest.param("image/*", True, id="one"),
        pytest.param(",", True, id="comma"),
    ],
)
def test_spec_truthiness(spec: str, truthy: bool) -> None:
    assert bool(parse_mime_patterns(spec)) is truthy
