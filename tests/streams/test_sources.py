"""File readers for ``marketmood publish``: contract mapping of the two stream formats, rate limiting."""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from streams.demo_news import DemoStream
from streams.messages import NewsMessage, parse_news
from streams.publisher import RateLimiter
from streams.sources import detect_format, read_records, spread_time

REUTERS = (
    "article_id,published_date,ticker,company,headline,summary,news_type,source\n"
    "aaa,2011-07-06,AAPL,Apple Inc,Hackers expose flaw in Apple iPad  iPhone software,BOSTON summary,normal,Reuters\n"
    "aaa,2011-07-06,MSFT,Microsoft,Hackers expose flaw in Apple iPad  iPhone software,BOSTON summary,normal,Reuters\n"
    "bbb,2011-07-06,XOM,Exxon,Exxon profit rises\u200b,,topStory,Reuters\n"
    "ccc,2011-07-07,XOM,Exxon,Exxon shares fall,x,normal,Reuters\n"
)
STOCKNET = (
    "tweet_id,created_at,ticker,user_screen_name,lang,is_retweet,text\n"
    "1,2014-01-01T10:00:00Z,AAPL,u1,en,false,$AAPL looks strong\n"
    "1,2014-01-01T10:00:00Z,GOOG,u1,en,false,$AAPL looks strong\n"
    "2,2014-01-01T10:05:00Z,GOOG,u2,es,false,Hola $GOOG\n"
    "1,2014-01-01T10:00:00Z,MSFT,u1,en,false,$AAPL looks strong\n"
)


def _write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)
    return path


def test_reuters_rows_merge_tickers_and_spread_over_the_day(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "reuters.train.csv.gz", REUTERS)
    assert detect_format(path) == "reuters"
    records = list(read_records(path))
    assert [r["id"] for r in records if r["id"] != "reuters-ccc"] == sorted(
        ["reuters-aaa", "reuters-bbb"], key=lambda i: spread_time(date(2011, 7, 6), i[8:])
    )
    by_id = {r["id"]: r for r in records}
    assert by_id["reuters-aaa"]["tickers"] == ["AAPL", "MSFT"]
    assert by_id["reuters-bbb"]["title"] == "Exxon profit rises" and by_id["reuters-bbb"]["summary"] is None
    assert records[-1]["id"] == "reuters-ccc"
    for r in records:  # every mapped record satisfies the contract, with a zone-aware time on its own day
        parsed = parse_news(json.dumps(r).encode())
        assert isinstance(parsed, NewsMessage) and parsed.published_at is not None
    assert by_id["reuters-ccc"]["published_at"].startswith("2011-07-07T")
    assert list(read_records(path)) == records  # deterministic


def test_stocknet_dedupes_tweets_and_filters_language(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "tweets.csv.gz", STOCKNET)
    assert detect_format(path) == "stocknet"
    records = list(read_records(path))
    assert [r["id"] for r in records] == ["tweet-1", "tweet-2"]
    assert records[0]["tickers"] == ["AAPL", "GOOG"] and records[0]["published_at"] == "2014-01-01T10:00:00+00:00"
    assert [r["id"] for r in read_records(path, lang="en")] == ["tweet-1"]
    assert all(isinstance(parse_news(json.dumps(r).encode()), NewsMessage) for r in records)


def test_jsonl_passes_records_and_raw_lines_through(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_text('{"id": "a", "title": "t"}\nnot json\n\n')
    assert list(read_records(path)) == [{"id": "a", "title": "t"}, b"not json"]


def test_unknown_csv_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="unknown CSV columns"):
        detect_format(path)


def test_rate_limiter_paces_without_drift() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(11):
        limiter.wait()
    assert now[0] == pytest.approx(1.0)


def test_demo_stream_is_deterministic_valid_and_has_a_negative_burst() -> None:
    stream = DemoStream(n_articles=400, seed=3, run_id="r")
    def fixed() -> datetime:
        return datetime(2024, 1, 1, tzinfo=timezone.utc)

    a, b = list(stream.articles(now=fixed)), list(stream.articles(now=fixed))
    assert a == b and len({m["id"] for m in a}) == 400
    assert all(isinstance(parse_news(json.dumps(m).encode()), NewsMessage) for m in a)
    energy = {"XOM", "CVX", "BP", "SHEL"}
    inside = [m for i, m in enumerate(a) if stream.in_burst(i)]
    assert sum(m["tickers"][0] in energy for m in inside) / len(inside) > 0.5
