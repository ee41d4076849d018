"""Small builders shared by the stream tests: raw records, news.raw values and a classifier test double."""

from __future__ import annotations

import json
from collections.abc import Sequence

from models.prediction import InvalidTextError, Prediction
from streams.processing import RawRecord


class RefusesWordClassifier:
    """Test double of the Classifier contract: refuses texts containing 'BAD', else a fixed verdict."""

    model_version = "double-1"

    def __init__(self) -> None:
        self.calls = 0

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        for i, t in enumerate(texts):
            if "BAD" in t:
                raise InvalidTextError(i, "refused by test double")
        return [Prediction("Markets", 0.9, "negative", 0.7, 0.2, 0.1, self.model_version) for _ in texts]


def rec(offset: int, value: bytes, partition: int = 0) -> RawRecord:
    return RawRecord("news.raw", partition, offset, b"k", value, [("trace", b"1")])


def msg(i: str, title: str = "Stocks fall") -> bytes:
    return json.dumps({"id": i, "title": title, "published_at": "2024-01-01T00:00:00+00:00"}).encode()


#: A StockNet-format sample: one tweet repeated over three tickers (one record), one Spanish tweet.
STOCKNET = (
    "tweet_id,created_at,ticker,user_screen_name,lang,is_retweet,text\n"
    "1,2014-01-01T10:00:00Z,AAPL,u1,en,false,$AAPL looks strong\n"
    "1,2014-01-01T10:00:00Z,GOOG,u1,en,false,$AAPL looks strong\n"
    "2,2014-01-01T10:05:00Z,GOOG,u2,es,false,Hola $GOOG\n"
    "1,2014-01-01T10:00:00Z,MSFT,u1,en,false,$AAPL looks strong\n"
)
