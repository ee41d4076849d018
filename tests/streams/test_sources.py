"""File readers for ``marketmood publish``: contract mapping of the two stream formats, rate limiting,
retiming history onto the present (``--retime now --speed 24``) and the date-only flag."""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.settings import TopicSettings
from streams.demo_news import DemoStream
from streams.messages import NewsMessage, parse_news
from streams.publisher import LiveClock, RateLimiter, encode, headers
from streams.sources import (
    detect_format,
    in_run,
    read_records,
    record_time,
    retime,
    run_id,
    since,
    spread_time,
)
from tests.streams.harness import consume_all
from tests.streams.records import STOCKNET

REUTERS = (
    "article_id,published_date,ticker,company,headline,summary,news_type,source\n"
    "aaa,2011-07-06,AAPL,Apple Inc,Hackers expose flaw in Apple iPad  iPhone software,BOSTON summary,normal,Reuters\n"
    "aaa,2011-07-06,MSFT,Microsoft,Hackers expose flaw in Apple iPad  iPhone software,BOSTON summary,normal,Reuters\n"
    "bbb,2011-07-06,XOM,Exxon,Exxon profit rises\u200b,,topStory,Reuters\n"
    "ccc,2011-07-07,XOM,Exxon,Exxon shares fall,x,normal,Reuters\n"
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


def test_a_byte_order_mark_does_not_hide_the_header_or_the_first_record(tmp_path: Path) -> None:
    plain = list(read_records(_write_gz(tmp_path / "reuters.csv.gz", REUTERS)))
    bom = _write_gz(tmp_path / "reuters-bom.csv.gz", "\ufeff" + REUTERS)
    assert detect_format(bom) == "reuters" and list(read_records(bom)) == plain
    jsonl = tmp_path / "news.jsonl"
    jsonl.write_text('{"id": "a", "title": "t"}\n', encoding="utf-8-sig")
    assert list(read_records(jsonl)) == [{"id": "a", "title": "t"}]


def test_unknown_csv_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="unknown CSV columns"):
        detect_format(path)


def test_rate_limiter_paces_without_drift() -> None:
    """A real sleep oversleeps: a limiter that sleeps 1/rate between calls accumulates every overshoot (1.05 s
    for 11 calls at 10/s with 5 ms each); one paced against the schedule absorbs them (1.005 s)."""
    now = [0.0]

    def oversleeping(s: float) -> None:
        now[0] += s + 0.005

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=oversleeping)
    for _ in range(11):
        limiter.wait()
    assert now[0] == pytest.approx(1.005)


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


def test_reuters_records_are_flagged_date_only_and_stocknet_ones_are_not(tmp_path: Path) -> None:
    reuters = list(read_records(_write_gz(tmp_path / "reuters.train.csv.gz", REUTERS)))
    assert {r["time_precision"] for r in reuters} == {"day"}
    assert headers(reuters[0]) == [("time-precision", b"day")]
    tweets = list(read_records(_write_gz(tmp_path / "tweets.csv.gz", STOCKNET)))
    assert all("time_precision" not in t for t in tweets) and headers(tweets[0]) == []


def _stream(*minutes: float) -> list[dict[str, object]]:
    base = datetime(2014, 1, 1, 10, tzinfo=timezone.utc)
    return [{"id": f"t{i}", "title": "x", "published_at": (base + timedelta(minutes=m)).isoformat()}
            for i, m in enumerate(minutes)]


def test_retime_keeps_relative_spacing_divided_by_speed() -> None:
    start = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    history = _stream(0, 60, 60, 24 * 60)
    out = list(retime([*history[:2], b"raw line", *history[2:]], start=start, speed=24))
    times = [record_time(r) for r in out]
    assert times == [start, start + timedelta(minutes=2.5), None, start + timedelta(minutes=2.5),
                     start + timedelta(hours=1)]  # one day of history in one hour
    assert out[2] == b"raw line"  # no time: passed through (the worker stamps it at ingest)
    assert out[1]["original_published_at"] == history[1]["published_at"] and out[1]["id"] == "t1"
    assert all(isinstance(parse_news(json.dumps(r).encode()), NewsMessage) for r in out if isinstance(r, dict))
    with pytest.raises(ValueError, match="speed"):
        list(retime(history, start=start, speed=0))


def test_retime_of_the_reuters_stream_stays_on_the_present(tmp_path: Path) -> None:
    start = datetime.now(timezone.utc)
    out = list(retime(read_records(_write_gz(tmp_path / "r.csv.gz", REUTERS)), start=start, speed=24))
    times = [record_time(r) for r in out]
    assert times == sorted(times) and times[0] == start
    assert times[-1] - start < timedelta(hours=2)  # two calendar days -> under two hours
    assert all(r["time_precision"] == "day" for r in out)


def test_since_skips_older_records() -> None:
    history = _stream(0, 10, 20)
    assert [r["id"] for r in since(history, record_time(history[1]))] == ["t1", "t2"]  # type: ignore[arg-type,index]


def test_live_clock_waits_until_each_records_time() -> None:
    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    clock = LiveClock(clock=lambda: now[0], sleep=sleep)
    due = datetime.fromtimestamp(1002.5, tz=timezone.utc)
    clock.wait({"id": "a", "title": "t", "published_at": due.isoformat()})
    assert now[0] == pytest.approx(1002.5) and max(slept) <= 1.0  # in slices: a stop request is honoured
    clock.wait({"id": "b", "title": "t", "published_at": "1970-01-01T00:00:01+00:00"})  # in the past: at once
    clock.wait(b"raw")
    assert now[0] == pytest.approx(1002.5)


def test_publish_retime_now_replays_history_as_a_live_stream(
    kafka_bootstrap: str, topic_names: TopicSettings, tmp_path: Path
) -> None:
    path = _write_gz(tmp_path / "reuters.train.csv.gz", REUTERS)  # 2011-07-06 and 07: date-only news
    before = datetime.now(timezone.utc)
    result = CliRunner().invoke(cli, ["publish", str(path), "--retime", "now", "--speed", "43200",
                                      "--bootstrap", kafka_bootstrap, "--topic", topic_names.raw])
    finished = datetime.now(timezone.utc)
    assert result.exit_code == 0, result.output
    assert "published 3 messages" in result.output
    records = consume_all(kafka_bootstrap, topic_names.raw, 3, timeout_s=20)
    values = sorted((json.loads(r.value) for r in records), key=lambda v: v["published_at"])
    times = [datetime.fromisoformat(v["published_at"]) for v in values]
    assert before.replace(microsecond=0) <= times[0] <= before + timedelta(seconds=30)  # now, to the second
    assert timedelta(seconds=2) < times[-1] - times[0] < timedelta(seconds=4)  # a day and a bit of history at 43200x
    # Sent live, not at once: the last record left when its (retimed) time came. ``now`` is cut to the second, so
    # the first record may be up to 1 s overdue at once: the elapsed time alone (the check before) was flaky.
    assert finished >= times[-1] - timedelta(milliseconds=50)
    assert [v["original_published_at"][:10] for v in values] == ["2011-07-06", "2011-07-06", "2011-07-07"]
    assert all(dict(r.headers)["time-precision"] == b"day" for r in records)


def test_publish_speed_without_retime_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text('{"id": "a", "title": "t"}\n')
    result = CliRunner().invoke(cli, ["publish", str(path), "--speed", "24", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2 and "--speed needs --retime" in result.output
    result = CliRunner().invoke(cli, ["publish", str(path), "--retime", "yesterday"])
    assert result.exit_code == 2 and "expected 'now' or an ISO-8601 time" in result.output


def test_jsonl_lines_that_are_not_objects_or_not_utf8_go_as_raw_bytes(tmp_path: Path) -> None:
    """A JSON line that is not an object ([..], null, 42) came out as a list/None/int and crashed the replay
    with an AttributeError traceback in encode(); a non-UTF-8 line stopped it with UnicodeDecodeError, leaving
    the lines after it unsent. Both are now passed on as raw bytes, for the worker to dead-letter."""
    path = tmp_path / "news.jsonl"
    path.write_bytes(b'{"id": "a", "title": "t"}\r\n[1, 2]\nnull\n42\n\xff\xfe not utf-8\n{"id": "b", "title": "u"}\n')
    records = list(read_records(path))
    assert records == [{"id": "a", "title": "t"}, b"[1, 2]", b"null", b"42", b"\xff\xfe not utf-8",
                       {"id": "b", "title": "u"}]
    assert [encode(r)[1] for r in records[1:5]] == records[1:5]  # sent as they are
    reasons = [parse_news(r).reason for r in records[1:5]]  # type: ignore[union-attr]
    assert reasons == ["not_an_object"] * 3 + ["not_utf8"]
    gz = _write_gz(tmp_path / "news.jsonl.gz", '\ufeff{"id": "a", "title": "t"}\n')
    assert list(read_records(gz)) == [{"id": "a", "title": "t"}]


def test_reuters_day_rows_that_are_not_together_are_an_error_not_a_duplicate(tmp_path: Path) -> None:
    """The reader merges an article's tickers one day at a time. A file not sorted by date (here by ticker)
    sent article aaa twice, each copy with part of its tickers: the worker dead-letters the second as a
    conflicting duplicate and MSFT is lost. Now the replay stops with a message saying to sort the file."""
    path = tmp_path / "reuters.csv"
    path.write_text("article_id,published_date,ticker,headline\n"
                    "aaa,2011-07-06,AAPL,Apple and Microsoft\n"
                    "ccc,2011-07-07,AAPL,Apple again\n"
                    "aaa,2011-07-06,MSFT,Apple and Microsoft\n")
    sent: list[str] = []
    with pytest.raises(ValueError, match="rows of 2011-07-06 are not together.*sort the file by published_date"):
        for record in read_records(path):
            sent.append(record["id"])  # type: ignore[index]
    assert sent == ["reuters-aaa", "reuters-ccc"]  # nothing sent twice
    reverse = tmp_path / "reverse.csv"  # newest day first is still one group per day: accepted
    reverse.write_text("article_id,published_date,ticker,headline\nccc,2011-07-07,AAPL,Apple again\n"
                       "aaa,2011-07-06,AAPL,Apple and Microsoft\naaa,2011-07-06,MSFT,Apple and Microsoft\n")
    assert [r["tickers"] for r in read_records(reverse)] == [["AAPL"], ["AAPL", "MSFT"]]  # type: ignore[index]


def test_stocknet_times_without_a_zone_are_utc_not_dead_letters(tmp_path: Path) -> None:
    """StockNet times are UTC by definition; a file whose created_at lost its ``Z`` (re-exported by a tool)
    produced naive times, and the worker dead-letters every one of them (the contract refuses naive times)."""
    path = tmp_path / "tweets.csv"
    path.write_text("tweet_id,created_at,ticker,user_screen_name,lang,is_retweet,text\n"
                    "1,2014-01-01 10:00:00,AAPL,u1,en,false,$AAPL looks strong\n"
                    "2,2014-01-01T10:05:00Z,GOOG,u2,en,false,$GOOG too\n")
    records = list(read_records(path))
    times = [r["published_at"] for r in records]  # type: ignore[index]
    assert times == ["2014-01-01T10:00:00+00:00", "2014-01-01T10:05:00+00:00"]
    assert all(isinstance(parse_news(json.dumps(r).encode()), NewsMessage) for r in records)


def test_a_run_is_named_by_its_start_second_and_tags_only_ids_the_contract_takes() -> None:
    """``run_id`` is the one definition (publish --retime and the demo's feeds); ``in_run`` makes each id
    ``ID@RUN`` so two runs of one file are distinct articles, while a record the worker must dead-letter (no
    id, a blank or non-string one, raw bytes) is passed unchanged instead of being made valid."""
    start = datetime(2026, 12, 7, 18, 50, 14, 999_999, tzinfo=timezone(timedelta(hours=1)))
    assert run_id(start) == "20261207175014"
    records = [{"id": "reuters-1", "title": "t"}, {"id": 7, "title": "t"}, {"id": " \u200b", "title": "t"},
               {"title": "no id"}, b"raw", {"id": " t-2 ", "title": "t"}]
    out = list(in_run(records, "r1"))
    assert [r.get("id") if isinstance(r, dict) else r for r in out] == [
        "reuters-1@r1", 7, " \u200b", None, b"raw", "t-2@r1"]
    assert records[0]["id"] == "reuters-1"  # type: ignore[index]  # the input is not modified
    for bad in ("", "a@b", "has space", "-leading", "x" * 65):
        with pytest.raises(ValueError, match="run id"):
            in_run(records, bad)  # at once, not at the first record
    with pytest.raises(ValueError, match="aware"):
        run_id(datetime(2026, 12, 7))


def test_an_id_near_the_contract_limit_stays_a_valid_distinct_id_in_a_run() -> None:
    """The contract takes ids of up to 512 characters; ``ID@RUN`` adds 15, so a record whose id was valid in the
    file (a scraper's URL-like id of 500 characters) was dead-lettered ``invalid_fields`` by every retimed replay.
    Such an id is shortened deterministically (its start and a hash): valid, distinct from its neighbours, the
    same in a repeated run; an id the contract refuses anyway is still passed unchanged."""
    base = "https://news.example.com/2016/03/01/" + "a" * 460
    records = [{"id": f"{base}{tail}", "title": "Oil falls", "published_at": "2016-03-01T09:00:00+00:00"}
               for tail in ("-1", "-2", "x" * 40)]
    assert all(isinstance(parse_news(json.dumps(r).encode()), NewsMessage) for r in records[:2])
    tagged = list(in_run(records, "20261207175014"))
    parsed = [parse_news(json.dumps(r).encode()) for r in tagged[:2]]
    assert all(isinstance(p, NewsMessage) for p in parsed), parsed
    assert len({p.id for p in parsed}) == 2 and all(p.id.endswith("@20261207175014") for p in parsed)
    assert [r["id"] for r in in_run(records, "20261207175014")] == [r["id"] for r in tagged]  # a run repeated
    assert tagged[2] == records[2]  # 536 characters: refused by the contract with or without a run
    short = list(in_run([{"id": "x" * 497, "title": "t"}], "20261207175014"))[0]
    assert short["id"] == "x" * 497 + "@20261207175014"  # exactly 512: unchanged form
