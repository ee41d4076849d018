"""Read news files and map them to the news.raw contract (used by ``marketmood publish``).

Formats, detected from the file:
- JSONL (``.jsonl``/``.ndjson``, optionally ``.gz``): one contract object per line, passed through as-is
  (a line that is not a JSON object, or not UTF-8, is sent as raw bytes, which is handy for dead-letter drills).
- Reuters stream CSV (``article_id,published_date,ticker,...``): dates only, so each day's articles are
  spread over that day at a deterministic time (a hash of the article id), then sent in time order. Rows
  of one article tagged to several tickers are merged into one message with all tickers. The rows of a day
  must be together (a file sorted by date); a day that comes back later is an error, not a duplicate.
- StockNet tweets CSV (``tweet_id,created_at,ticker,...``): exact UTC timestamps (``+00:00`` added to one
  without a zone); consecutive rows of one tweet are merged (tickers), and a tweet seen before is skipped.
- Any other CSV whose columns are contract field names (``tickers`` separated by ``;`` or ``,``).

Time precision: Reuters gives dates only; its records carry ``"time_precision": "day"`` (an extra field the
contract allows and the worker ignores) and ``marketmood publish`` adds the Kafka header
``time-precision: day``, so no consumer mistakes the spread time of day for a real one.

``retime`` maps a historical stream onto the present (``marketmood publish --retime now --speed 24``): the
first record's time becomes the start, later ones keep their spacing divided by ``speed``; the original time
stays in ``original_published_at``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, TextIO

Record = dict[str, Any] | bytes

REUTERS_COLUMNS = {"article_id", "published_date", "ticker", "headline"}
TIME_PRECISION_FIELD = "time_precision"
STOCKNET_COLUMNS = {"tweet_id", "created_at", "ticker", "text"}


def _open_bytes(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def _open_text(path: Path) -> TextIO:
    return io.TextIOWrapper(_open_bytes(path), encoding="utf-8-sig", newline="")


def _base_suffix(path: Path) -> str:
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def detect_format(path: Path) -> str:
    """``jsonl``, ``reuters``, ``stocknet`` or ``csv``."""
    suffix = _base_suffix(path).lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix != ".csv":
        raise ValueError(f"{path}: expected .jsonl/.ndjson or .csv (optionally .gz)")
    with _open_text(path) as fh:
        header = set(next(csv.reader(fh), []))
    if REUTERS_COLUMNS <= header:
        return "reuters"
    if STOCKNET_COLUMNS <= header:
        return "stocknet"
    if {"id", "title"} <= header:
        return "csv"
    raise ValueError(f"{path}: unknown CSV columns {sorted(header)}; need contract fields (id, title, ...)")


def read_records(path: Path, *, fmt: str | None = None, lang: str | None = None) -> Iterator[Record]:
    """Contract messages from ``path`` in publish order."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    readers = {"jsonl": _jsonl, "reuters": _reuters, "stocknet": _stocknet, "csv": _generic_csv}
    for record in readers[fmt](path):
        if lang and isinstance(record, dict) and record.get("lang") not in (None, lang):
            continue
        yield record


def _jsonl(path: Path) -> Iterator[Record]:
    """Objects as dicts; any other line (not JSON, JSON that is not an object, not UTF-8) as its raw bytes, so
    the worker dead-letters it: one bad line neither crashes the replay nor stops the lines after it."""
    with _open_bytes(path) as fh:
        for number, raw in enumerate(fh):
            line = (raw.removeprefix(b"\xef\xbb\xbf") if number == 0 else raw).strip()
            if not line:
                continue
            try:
                value = json.loads(line.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError included
                value = None
            yield value if isinstance(value, dict) else line


def spread_time(day: date, article_id: str) -> datetime:
    """A deterministic time of day for a date-only article: the same id always gets the same second."""
    seconds = int(hashlib.sha1(article_id.encode()).hexdigest()[:8], 16) % 86_400
    return datetime.combine(day, time(0, 0), tzinfo=timezone.utc) + timedelta(seconds=seconds)


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\u200b", "").replace("\u200d", "").strip()
    return text or None


def _reuters(path: Path) -> Iterator[Record]:
    day: str | None = None
    articles: dict[str, dict[str, Any]] = {}

    def flush() -> Iterator[Record]:
        ordered = sorted(articles.values(), key=lambda a: (a["published_at"], a["id"]))
        for a in ordered:
            a["published_at"] = a["published_at"].isoformat()
            yield a
        articles.clear()

    done_days: set[str] = set()
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            if row["published_date"] != day:
                yield from flush()
                if day is not None:
                    done_days.add(day)
                day = row["published_date"]
                if day in done_days:  # its articles went out already: they would go again, tickers split
                    raise ValueError(f"{path}: the rows of {day} are not together (line {reader.line_num}); "
                                     "articles are merged one day at a time, so sort the file by published_date")
            existing = articles.get(row["article_id"])
            ticker = (row.get("ticker") or "").strip()
            if existing is not None:
                if ticker and ticker not in existing["tickers"]:
                    existing["tickers"].append(ticker)
                continue
            title = _clean(row.get("headline"))
            if title is None:
                continue
            articles[row["article_id"]] = {
                "id": f"reuters-{row['article_id']}",
                "title": title,
                "summary": _clean(row.get("summary")),
                "source": row.get("source") or "Reuters",
                "published_at": spread_time(date.fromisoformat(day), row["article_id"]),
                "tickers": [ticker] if ticker else [],
                "lang": "en",
                TIME_PRECISION_FIELD: "day",
            }
        yield from flush()


def _utc(stamp: str) -> str:
    """StockNet times are UTC; one without a zone (e.g. re-exported by a tool that dropped the ``Z``) gets
    ``+00:00``, since the contract dead-letters naive times. A date only or an unparsable value is passed on
    as it is, for the worker to reject (midnight would pass a date for an exact time)."""
    if ":" not in stamp:
        return stamp
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)).isoformat()


def _stocknet(path: Path) -> Iterator[Record]:
    seen: set[str] = set()
    pending: dict[str, Any] | None = None
    with _open_text(path) as fh:
        for row in csv.DictReader(fh):
            tweet_id = row["tweet_id"]
            ticker = (row.get("ticker") or "").strip()
            if pending is not None and pending["id"] == f"tweet-{tweet_id}":
                if ticker and ticker not in pending["tickers"]:
                    pending["tickers"].append(ticker)
                continue
            if pending is not None:
                yield pending
                pending = None
            if tweet_id in seen:
                continue
            seen.add(tweet_id)
            title = _clean(row.get("text"))
            if title is None:
                continue
            user = row.get("user_screen_name") or "i"
            pending = {
                "id": f"tweet-{tweet_id}",
                "title": title,
                "source": "twitter",
                "url": f"https://twitter.com/{user}/status/{tweet_id}",
                "published_at": _utc(row["created_at"]),
                "tickers": [ticker] if ticker else [],
                "lang": row.get("lang") or None,
            }
        if pending is not None:
            yield pending


def _generic_csv(path: Path) -> Iterator[Record]:
    with _open_text(path) as fh:
        for row in csv.DictReader(fh):
            record: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
            if "tickers" in record:
                sep = ";" if ";" in record["tickers"] else ","
                record["tickers"] = [t.strip() for t in record["tickers"].split(sep) if t.strip()]
            yield record


def record_time(record: Record) -> datetime | None:
    """The record's ``published_at`` as an aware datetime (None when absent, unparsable or naive)."""
    if not isinstance(record, dict) or not isinstance(record.get("published_at"), str):
        return None
    try:
        moment = datetime.fromisoformat(record["published_at"].replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def since(records: Iterable[Record], start: datetime) -> Iterator[Record]:
    """Records from ``start`` on (records without a time are kept once the start is reached)."""
    reached = False
    for record in records:
        moment = record_time(record)
        if moment is not None:
            reached = moment >= start
        if reached:
            yield record


def retime(records: Iterable[Record], *, start: datetime, speed: float = 1.0) -> Iterator[Record]:
    """Map history onto ``start``: ``new = start + (t - t_first) / speed`` (relative spacing kept, ``speed``
    times faster). Records without a usable time pass unchanged (the worker stamps them at ingest)."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    origin: datetime | None = None
    for record in records:
        moment = record_time(record)
        if moment is None:
            yield record
            continue
        if origin is None:
            origin = moment
        assert isinstance(record, dict)
        yield {**record, "published_at": (start + (moment - origin) / speed).isoformat(),
               "original_published_at": record["published_at"]}
