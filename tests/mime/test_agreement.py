"""Agreement with libmagic (python-magic, MAGIC_MIME_TYPE) on the corpus's first 1 KiB.

Every disagreement must be listed in KNOWN_DISAGREEMENTS with its reason; an unlisted one, or a
listed one that no longer happens, fails the test, as does agreement below 95 %.
"""

from __future__ import annotations

import pytest

from .conftest import Sniff, require
from .corpus import Sample

# sample name → (ours, libmagic's, why we deliberately differ)
KNOWN_DISAGREEMENTS: dict[str, tuple[str, str, str]] = {
    "audio-big-id3.mp3": (
        "audio/mpeg",
        "application/octet-stream",
        "mimesniff §6.2.3: an ID3v2 tag means audio/mpeg. libmagic only names the type when an "
        "MPEG frame follows the tag inside the buffer, and a tag with cover art is larger than "
        "the 1 KiB the downloader sniffs.",
    ),
}

# Disagreements outside the corpus, documented for the record (hand-made or rare inputs):
# - ZIP archives shorter than 50 bytes: libmagic says octet-stream, so do we (we follow it).
# - OOXML (docx/xlsx/pptx), JAR, APK: libmagic names them by their members; we say zip.
# - Scripts and source (#!/bin/sh, <?php, C, Python): libmagic has text/x-* heuristics; we say
#   text/plain.
# - UTF-16/32 text holding HTML/XML: libmagic decodes and finds the markup; we say text/plain.
# - V7 (pre-POSIX) tar without "ustar": both use the checksum; libmagic also has weaker rules.
# - Truncated or zeroed headers (e.g. "8BPS" + zeros, ID3 + zeros, "OggS\0" + zeros): libmagic
#   runs sub-tests we do not copy; we follow the format's signature and version fields.
# - TrueType (00 01 00 00) and 3-byte "FF D8 FF": libmagic needs more context; we stay silent
#   on TrueType and, like libmagic, do not call 3 bytes JPEG.


def test_agreement_with_libmagic(sniff_impl: Sniff, corpus: list[Sample]) -> None:
    magic = require("magic", "python-magic")
    libmagic = magic.Magic(mime=True)
    both = 0
    agree = 0
    found: dict[str, tuple[str, str]] = {}
    for s in corpus:
        ours = sniff_impl(s.head)
        theirs = libmagic.from_buffer(s.head) if s.head else "application/x-empty"
        both += 1
        if ours == theirs:
            agree += 1
        else:
            found[s.name] = (ours, theirs)
    assert found == {k: v[:2] for k, v in KNOWN_DISAGREEMENTS.items()}
    assert agree / both >= 0.95, f"agreement {agree}/{both}"


@pytest.mark.parametrize("name", sorted(KNOWN_DISAGREEMENTS))
def test_known_disagreements_have_reasons(name: str) -> None:
    ours, theirs, why = KNOWN_DISAGREEMENTS[name]
    assert ours != theirs
    assert len(why) > 40
