"""Go filepath.Match: the table of Go's path/filepath/match_test.go, plus MIME-shaped cases."""

from __future__ import annotations

import pytest

from pazari.mime import BadPattern, match, validate

BAD = BadPattern

# (pattern, name, matched, error) as in Go's matchTests (Go ≥ 1.16, Unix separator).
GO_MATCH_TESTS: list[tuple[str, str, bool, type[Exception] | None]] = [
    ("abc", "abc", True, None),
    ("*", "abc", True, None),
    ("*c", "abc", True, None),
    ("a*", "a", True, None),
    ("a*", "abc", True, None),
    ("a*", "ab/c", False, None),
    ("a*/b", "abc/b", True, None),
    ("a*/b", "a/c/b", False, None),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True, None),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True, None),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False, None),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False, None),
    ("a*b?c*x", "abxbbxdbxebxczzx", True, None),
    ("a*b?c*x", "abxbbxdbxebxczzy", False, None),
    ("ab[c]", "abc", True, None),
    ("ab[b-d]", "abc", True, None),
    ("ab[e-g]", "abc", False, None),
    ("ab[^c]", "abc", False, None),
    ("ab[^b-d]", "abc", False, None),
    ("ab[^e-g]", "abc", True, None),
    ("a\\*b", "a*b", True, None),
    ("a\\*b", "ab", False, None),
    ("a?b", "a☺b", True, None),
    ("a[^a]b", "a☺b", True, None),
    ("a???b", "a☺b", False, None),
    ("a[^a][^a][^a]b", "a☺b", False, None),
    ("[a-ζ]*", "\u03b1", True, None),  # Greek alpha
    ("*[a-ζ]", "A", False, None),
    ("a?b", "a/b", False, None),
    ("a*b", "a/b", False, None),
    ("[\\]a]", "]", True, None),
    ("[\\-]", "-", True, None),
    ("[x\\-]", "x", True, None),
    ("[x\\-]", "-", True, None),
    ("[x\\-]", "z", False, None),
    ("[\\-x]", "x", True, None),
    ("[\\-x]", "-", True, None),
    ("[\\-x]", "a", False, None),
    ("[]a]", "]", False, BAD),
    ("[-]", "-", False, BAD),
    ("[x-]", "x", False, BAD),
    ("[x-]", "-", False, BAD),
    ("[x-]", "z", False, BAD),
    ("[-x]", "x", False, BAD),
    ("[-x]", "-", False, BAD),
    ("[-x]", "a", False, BAD),
    ("\\", "a", False, BAD),
    ("[a-b-c]", "a", False, BAD),
    ("[", "a", False, BAD),
    ("[^", "a", False, BAD),
    ("[^bc", "a", False, BAD),
    ("a[", "a", False, BAD),
    ("a[", "ab", False, BAD),
    # Go 1.16: the rest of the pattern is checked even after the name failed to match.
    ("a[", "x", False, BAD),
    ("a/b[", "x", False, BAD),
    ("*x", "xxx", True, None),
]

# The downloader's uses: Go semantics, not fnmatch's (spec §10, limitation 6).
MIME_MATCH_TESTS: list[tuple[str, str, bool, type[Exception] | None]] = [
    ("image/*", "image/png", True, None),
    ("image/*", "image/svg+xml", True, None),
    ("image/*", "video/mp4", False, None),
    ("*", "image/png", False, None),  # * never crosses the separator
    ("*/*", "image/png", True, None),
    ("*", "", True, None),
    ("", "", True, None),
    ("", "image/png", False, None),  # the empty pattern of a trailing comma
    ("image/p?g", "image/png", True, None),
    ("image/[jp]*", "image/jpeg", True, None),
    ("image/[^jp]*", "image/jpeg", False, None),
    ("Image/*", "image/png", False, None),  # case-sensitive
    ("image/vnd.adobe.photoshop", "image/vnd.adobe.photoshop", True, None),
    ("image\\/png", "image/png", True, None),
    ("image/*\\", "image/png", False, BAD),  # trailing backslash
    ("image/[png", "image/png", False, BAD),
    ("video/*[", "image/png", False, BAD),  # malformed part after a mismatch
    ("*[", "image/png", False, BAD),
    ("[]", "a", False, BAD),
]


def _cases(
    table: list[tuple[str, str, bool, type[Exception] | None]],
) -> list[object]:
    return [pytest.param(p, n, m, e, id=f"{p!r}~{n!r}") for p, n, m, e in table]


@pytest.mark.parametrize(
    ("pattern", "name", "matched", "error"), _cases(GO_MATCH_TESTS + MIME_MATCH_TESTS)
)
def test_match(pattern: str, name: str, matched: bool, error: type[Exception] | None) -> None:
    if error is not None:
        with pytest.raises(error):
            match(pattern, name)
    else:
        assert match(pattern, name) is matched


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        pytest.param("image/*", True, id="star"),
        pytest.param("[a-z]/\\*", True, id="class-and-escape"),
        pytest.param("[]a]", False, id="empty-class"),
        pytest.param("\\", False, id="trailing-backslash"),
        pytest.param("[", False, id="unclosed"),
        pytest.param("[z-", False, id="unfinished-range"),
        pytest.param("x*[^", False, id="unclosed-after-star"),
    ],
)
def test_validate(pattern: str, valid: bool) -> None:
    if valid:
        validate(pattern)
    else:
        with pytest.raises(BadPattern) as info:
            validate(pattern)
        assert str(info.value) == "syntax error in pattern"  # Go's ErrBadPattern text
        assert info.value.pattern == pattern
