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

Runs: a retimed record is another article than the original (its time, part of what the worker stores, differs),
so a replay tags its ids with a run id (``in_run``: ``reuters-17@20261207175014``). The worker stores an id
once and refuses a copy whose content differs (``conflicting_duplicate``): with the file's own ids a second
retimed replay, or one after a plain replay, was dead-lettered whole. One run is one time mapping: its records
repeated (a re-sent batch, the same command again, a resumed replay) are identical and stored once.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from streams.messages import NewsMessage, stored_id

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


RUN_SEPARATOR = "@"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
#: The longest id the news.raw contract takes (read from it: one definition).
MAX_ID_CHARS: int = next(m.max_length for m in NewsMessage.model_fields["id"].metadata
                         if getattr(m, "max_length", None) is not None)
_ID_DIGEST_CHARS = 16


def check_run_id(run: str) -> str:
    """``run`` if it can name a run: 1-64 letters, digits and ``._:-``; it ends every id of the run, so no
    ``@`` (an id's last ``@`` separates it) and nothing a log line or a URL would mangle."""
    if not _RUN_ID.fullmatch(run):
        raise ValueError(f"run id {run!r}: expected 1-64 letters, digits, '.', '_', ':' or '-' (e.g. 20261207175014)")
    return run


def run_id(start: datetime) -> str:
    """The id of a replay run that starts at ``start``: that instant in UTC, to the second (``20261207175014``).

    The one definition of run ids (``marketmood publish --retime``, the demo's feeds): a run is named by when its
    replayed time begins, so the same start is the same run and a replay started later is a new one."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return start.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")


def in_run(records: Iterable[Record], run: str) -> Iterator[Record]:
    """Records with ids of ``run``: ``<id>@<run>``, so two runs of one file are distinct articles to the worker
    (whose writes keep the first content of an id) and one run repeated is the same articles again.

    Only an id the contract would take is tagged: a record without one, with a blank one, one of another type or
    one over MAX_ID_CHARS is passed unchanged for the worker to dead-letter as before (``123@run`` or `` @run``
    would be valid ids). An id that the run's suffix would take over MAX_ID_CHARS is cut and ends in a hash of
    the whole id (``<start>~<sha256 prefix>@<run>``): still valid, distinct, and the same in a repeated run.
    Raises ValueError for an unusable ``run`` at once, not at the first record."""
    check_run_id(run)
    return _tagged(records, run)


def _run_member_id(original: str, run: str) -> str:
    """``<id>@<run>``, or, when that would pass MAX_ID_CHARS, the id cut and ended by a hash of it (``original``
    is an id as the contract stores it: ``stored_id``)."""
    suffix = f"{RUN_SEPARATOR}{run}"
    if len(original) + len(suffix) <= MAX_ID_CHARS:
        return original + suffix
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_ID_DIGEST_CHARS]
    return f"{original[:MAX_ID_CHARS - len(suffix) - _ID_DIGEST_CHARS - 1]}~{digest}{suffix}"


def _tagged(records: Iterable[Record], run: str) -> Iterator[Record]:
    for record in records:
        if isinstance(record, dict):
            original = stored_id(record.get("id"))
            if original is not None:
                yield {**record, "id": _run_member_id(original, run)}
                continue
        yield record
