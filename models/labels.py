"""Label maps shared by training, inference, storage and the dashboards.

The order of each tuple is the order of the model's output logits: never reorder, only append with a new
model version. Dataset label names are mapped here, case-insensitively, so every caller agrees.
"""

from __future__ import annotations

from typing import Literal

# The model's two output heads, in the order of its forward pass.
HEADS: tuple[str, ...] = ("sentiment", "topic")

SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
Sentiment = Literal["negative", "neutral", "positive"]

# The 20 topics of zeroshot/twitter-financial-news-topic, in its integer-id order.
TOPIC_LABELS: tuple[str, ...] = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)

# Synonyms seen in the labeled sets: tweet sentiment uses market words.
_SENTIMENT_SYNONYMS: dict[str, str] = {
    "negative": "negative",
    "bearish": "negative",
    "neg": "negative",
    "neutral": "neutral",
    "neu": "neutral",
    "positive": "positive",
    "bullish": "positive",
    "pos": "positive",
}

_TOPIC_BY_KEY: dict[str, str] = {t.casefold(): t for t in TOPIC_LABELS}


class UnknownLabelError(ValueError):
    """A dataset label that maps to no class of the task."""


def normalize_sentiment(label: str) -> str:
    """Map a dataset's sentiment name (e.g. ``Bearish``) to negative/neutral/positive."""
    key = str(label).strip().casefold()
    try:
        return _SENTIMENT_SYNONYMS[key]
    except KeyError:
        raise UnknownLabelError(
            f"unknown sentiment label {label!r}; expected one of {sorted(_SENTIMENT_SYNONYMS)}"
        ) from None


def normalize_topic(label: str) -> str:
    """Map a topic name, case-insensitively, to its canonical spelling."""
    key = " ".join(str(label).split()).casefold()
    try:
        return _TOPIC_BY_KEY[key]
    except KeyError:
        raise UnknownLabelError(f"unknown topic label {label!r}; expected one of {list(TOPIC_LABELS)}") from None


def sentiment_index(label: str) -> int:
    return SENTIMENT_LABELS.index(normalize_sentiment(label))


def topic_index(label: str) -> int:
    return TOPIC_LABELS.index(normalize_topic(label))


def label_maps() -> dict[str, list[str]]:
    """The maps stored in every model artifact (the promotion gate compares them)."""
    return {"sentiment": list(SENTIMENT_LABELS), "topic": list(TOPIC_LABELS)}
