"""Label maps: fixed logit order, dataset synonyms (Bearish/Bullish), case-insensitive topic names."""

import pytest

from models.labels import (
    SENTIMENT_LABELS,
    TOPIC_LABELS,
    UnknownLabelError,
    label_maps,
    normalize_sentiment,
    normalize_topic,
    sentiment_index,
    topic_index,
)


def test_sentiment_order_is_negative_neutral_positive():
    assert SENTIMENT_LABELS == ("negative", "neutral", "positive")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Bearish", "negative"), ("BULLISH", "positive"), ("Neutral", "neutral"), (" positive ", "positive"), ("neg", "negative")],
)
def test_market_words_map_to_sentiment(raw, expected):
    assert normalize_sentiment(raw) == expected


def test_topic_ids_follow_the_dataset_readme():
    assert len(TOPIC_LABELS) == 20
    assert topic_index("Analyst Update") == 0
    assert topic_index("fed | central banks") == 1
    assert topic_index("STOCK  movement") == 19
    assert normalize_topic("m&a | investments") == "M&A | Investments"


@pytest.mark.parametrize("bad", ["bullishish", "", "very negative"])
def test_unknown_sentiment_is_rejected_with_choices(bad):
    with pytest.raises(UnknownLabelError, match="expected one of"):
        normalize_sentiment(bad)


def test_unknown_topic_is_rejected():
    with pytest.raises(UnknownLabelError):
        topic_index("Crypto")


def test_label_maps_are_what_artifacts_store():
    maps = label_maps()
    assert maps["sentiment"][sentiment_index("Bearish")] == "negative"
    assert maps["topic"] == list(TOPIC_LABELS)
