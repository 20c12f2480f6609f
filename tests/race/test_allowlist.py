"""The slow-callback allowlist must say why for each entry (issue 19): the checker refuses
an entry without a reason, and the shipped allowlist passes that check."""

from __future__ import annotations

import pytest

from pazari.runtime import race


def test_shipped_allowlist_gives_a_reason_for_every_entry() -> None:
    race.check_allowlist(race.SLOW_CALLBACK_ALLOWLIST)  # install() runs the same check
    for needle, why in race.SLOW_CALLBACK_ALLOWLIST.items():
        assert len(why.split()) >= race.MIN_REASON_WORDS, needle


@pytest.mark.parametrize(
    ("allowlist", "error"),
    [({"<TimerHandle _reload_certs>": ""}, "needs a reason"),
     ({"<TimerHandle _reload_certs>": "   "}, "needs a reason"),
     ({"<TimerHandle _reload_certs>": "needed"}, "needs a reason"),
     ({"": "loading the CA bundle takes 150 ms on a cold cache"}, "too short"),
     ({"Task": "loading the CA bundle takes 150 ms on a cold cache"}, "too short")],
)  # fmt: skip
def test_entry_without_a_reason_is_refused(allowlist: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        race.check_allowlist(allowlist)


def test_entry_with_a_reason_is_accepted() -> None:
    race.check_allowlist({"<TimerHandle _reload_certs>":
                          "loading the CA bundle takes 150 ms on a cold cache"})
