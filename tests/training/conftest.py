"""A tiny labeled data folder in the layout of ../shared/data, with texts written for these tests.

Training tests use it instead of the shared data so they run anywhere in well under a minute.
"""

import csv
from pathlib import Path

import pytest

from models.labels import TOPIC_LABELS

NEGATIVE = ["{c} shares plunge after profit warning", "{c} cuts guidance as sales slump", "{c} misses estimates, stock tumbles",
            "{c} faces fraud probe, shares sink", "{c} announces layoffs amid losses"]
NEUTRAL = ["{c} to hold annual meeting on Tuesday", "{c} names new board secretary", "{c} publishes quarterly report date",
           "{c} moves headquarters to new building", "{c} files routine disclosure"]
POSITIVE = ["{c} shares soar on record profit", "{c} beats estimates and raises outlook", "{c} wins major contract, stock jumps",
            "{c} posts strong growth in sales", "{c} upgraded to buy by analysts"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne"]


def _write(path: Path, rows: list[tuple[str, str]], extra: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", *(extra or {})])
        for text, label in rows:
            writer.writerow([text, label, *(extra or {}).values()])


def sentiment_rows(names: tuple[str, str, str]) -> list[tuple[str, str]]:
    rows = []
    for company in COMPANIES:
        for templates, label in zip((NEGATIVE, NEUTRAL, POSITIVE), names):
            rows.extend((t.format(c=company), label) for t in templates)
    return rows


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rows = sentiment_rows(("negative", "neutral", "positive"))
    _write(root / "financial_phrasebank/train.csv", rows[::2], {"agreement": "100"})
    _write(root / "financial_phrasebank/valid.csv", rows[1::4], {"agreement": "100"})
    _write(root / "twitter_financial_news_sentiment/train.csv",
           [(f"${c[:3].upper()} " + t, l) for (t, l), c in zip(sentiment_rows(("Bearish", "Neutral", "Bullish")), COMPANIES * 20)])
    topic_rows = [(f"{topic} update number {i} from {c}", topic) for topic in TOPIC_LABELS for i, c in enumerate(COMPANIES[:6])]
    _write(root / "twitter_financial_news_topic/train.csv", topic_rows)
    return root
