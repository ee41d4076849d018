"""story_key: syndicated copies collide, different stories do not."""

from __future__ import annotations

import pytest

from streams.novelty import normalize_headline, story_key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("UPDATE 2-Samsung estimates Q2 profit down 26 pct", "Samsung estimates Q2 profit down 26% - Reuters"),
        ("AB InBev to invest $703 million in Argentina 2011-2015", "AB InBev to invest $703 mln in Argentina 2011-2015"),
        ("Citi hit Moody's hurdle in OneMain sale -source", "Citi hit Moody's hurdle in OneMain sale"),
        ("RPT-UPDATE 1-Worker falls  dies at Conoco refinery", "Worker falls, dies at Conoco refinery"),
        ("BRIEF-Abeona Therapeutics prices offering", "Abeona Therapeutics prices offering (Reuters)"),
        ("$AAPL Apple beats estimates https://t.co/xyz", "$aapl Apple beats estimates | Bloomberg"),
        ("Fed raises rates by 75 bps", "FED RAISES RATES BY 75 BPS"),
        ("Oil\u200b slumps 5 percent", "Oil slumps 5%"),
        ("EXCLUSIVE-Tesla recalls 2 million cars", "Tesla recalls 2 mln cars - CNBC"),
    ],
)
def test_syndicated_copies_collide(a: str, b: str) -> None:
    assert story_key(a) == story_key(b), (normalize_headline(a), normalize_headline(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Samsung estimates Q2 profit down 26 pct", "Samsung estimates Q3 profit down 26 pct"),
        ("Stocks fall 2.5%", "Stocks fall 25%"),
        ("Apple beats estimates", "Apple misses estimates"),
        ("Fed raises rates", "Fed cuts rates"),
        # template tweets about different tickers are different stories (they were one, and per-ticker alerts
        # count novel articles only)
        ("$AAPL hits new 52-week high", "$TSLA hits new 52-week high"),
        ("$BRK.A up 2%", "$BRK.B up 2%"),
    ],
)
def test_different_stories_differ(a: str, b: str) -> None:
    assert story_key(a) != story_key(b)


def test_key_shape_and_degenerate_titles() -> None:
    key = story_key("Oil slumps")
    assert len(key) == 16 and int(key, 16) >= 0
    # Titles that normalize to nothing still get distinct keys instead of all colliding.
    assert story_key("!!!") != story_key("???")
    assert story_key("") == story_key("")
    assert normalize_headline("UPDATE 3-BRIEF-Acme Corp names new CEO - Reuters") == "acme corp names new ceo"
