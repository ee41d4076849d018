"""Writing scored articles (the worker's one write per micro-batch) and the reads the worker and demo need.

``upsert_scored_batch`` is idempotent, so Kafka redeliveries (rebalances, crashes before the offset
commit) never create duplicate rows: articles are keyed by id (first write wins) and scores by
(article id, model version). It runs in the caller's transaction, so "rows committed" and "offsets
acknowledged" can be ordered by the caller.

Novelty (syndication): an article is not novel when another article with the same non-null
``story_key`` has an ``event_time`` within ``window`` before it (ties: the row already stored, then the
earlier item of the batch, wins), whichever arrived first: a stored copy is demoted when an earlier one
arrives later. A transaction-scoped advisory lock per story-key bucket makes two
workers scoring copies of one story at the same moment see each other's rows.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from storage.progress import PartitionProgress, record_progress
from storage.schema import Article, Score
from storage.scores import current_scores_from

DEFAULT_NOVELTY_WINDOW = timedelta(hours=6)
_LOCK_NAMESPACE = 0x4D4D  # "MM": first key of pg_advisory_xact_lock(int, int)
_LOCK_BUCKETS = 256  # bounded number of locks per transaction, whatever the batch size


@dataclass(frozen=True, slots=True)
class ScoredArticle:
    """One article as received plus one model's score of it; ``story_key`` is computed by the caller."""

    id: str
    title: str
    model_version: str
    topic: str
    topic_confidence: float
    sentiment: str
    p_negative: float
    p_neutral: float
    p_positive: float
    score: float
    body: str | None = None
    source: str | None = None
    url: str | None = None
    published_at: datetime | None = None
    tickers: Sequence[str] = ()
    lang: str | None = None
    story_key: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    kafka_timestamp: datetime | None = None
    content_sha256: str | None = None  # fingerprint of the content; a stored id with another one conflicts


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What one batch changed; ``duplicates`` = items whose article row already existed (or repeated).

    ``conflicts`` are the (id, content_sha256) of items whose stored article (stored before, or by an
    earlier item of the same batch) has a different content: first write wins, so their score is NOT
    stored under that article; the caller dead-letters them.
    """

    articles_inserted: int
    scores_inserted: int
    duplicates: int
    not_novel: int
    conflicts: tuple[tuple[str, str | None], ...] = ()


def upsert_scored_batch(
    conn: Connection, items: Sequence[ScoredArticle], *, novelty_window: timedelta = DEFAULT_NOVELTY_WINDOW
) -> UpsertResult:
    """Insert new articles and scores in bulk inside the caller's transaction; safe to replay."""
    if not items:
        return UpsertResult(0, 0, 0, 0)
    now: datetime = conn.execute(select(func.now())).scalar_one()  # transaction start: one clock per batch

    first: dict[str, ScoredArticle] = {}
    for item in items:
        if item.published_at is not None and item.published_at.utcoffset() is None:
            raise ValueError(f"article {item.id!r}: published_at must be timezone-aware")
        first.setdefault(item.id, item)

    _lock_story_buckets(conn, {a.story_key for a in first.values() if a.story_key})
    existing = _stored(conn, list(first))
    # by id: two workers writing the same articles in different (Kafka) orders take their unique-key entries in
    # one order, instead of each holding one the other waits for (a deadlock, 40P01)
    new = sorted((a for a in first.values() if a.id not in existing), key=lambda a: a.id)
    event_times = {a.id: a.published_at or now for a in new}
    novel = _novelty(conn, new, event_times, novelty_window)

    inserted: set[str] = set()
    if new:
        inserted = set(conn.execute(_INSERT_ARTICLES, _article_columns(new, event_times, novel)).scalars())
        lost_race = [a.id for a in new if a.id not in inserted]  # inserted concurrently by another worker
        if lost_race:
            existing.update(_stored(conn, lost_race))
        _demote_later_copies(conn, [a for a in new if a.id in inserted], event_times, novelty_window)
    stored_sha = {article_id: sha for article_id, (_, sha) in existing.items()}
    stored_sha.update({a.id: a.content_sha256 for a in new if a.id in inserted})
    conflicts = tuple(dict.fromkeys(
        (item.id, item.content_sha256) for item in items
        if _conflicting(stored_sha.get(item.id), item.content_sha256)
    ))
    event_times.update({article_id: stored[0] for article_id, stored in existing.items()})

    unique_scores: dict[tuple[str, str], ScoredArticle] = {}
    for item in items:
        if (item.id, item.content_sha256) not in conflicts:
            unique_scores.setdefault((item.id, item.model_version), item)
    scores_inserted = 0
    if unique_scores:
        ordered = [unique_scores[k] for k in sorted(unique_scores)]  # one lock order, as for the articles
        scores_inserted = len(conn.execute(_INSERT_SCORES, _score_columns(ordered, event_times)).all())
    return UpsertResult(
        articles_inserted=len(inserted),
        scores_inserted=scores_inserted,
        duplicates=len(items) - len(inserted),
        not_novel=sum(1 for a in new if a.id in inserted and not novel[a.id]),
        conflicts=conflicts,
    )


def write_scored_batch(
    conn: Connection, items: Sequence[ScoredArticle], progress: Sequence[PartitionProgress] = ()
) -> UpsertResult:
    """The worker's one write per batch: articles + scores and the partitions' progress, in the caller's
    transaction (so the progress, hence the alert watermark, never runs ahead of the stored rows)."""
    result = upsert_scored_batch(conn, items)
    record_progress(conn, progress)
    return result


def _stored(conn: Connection, ids: list[str]) -> dict[str, tuple[datetime, str | None]]:
    """id -> (event_time, content_sha256) of the stored articles among ``ids``."""
    rows = conn.execute(
        select(Article.id, Article.event_time, Article.content_sha256)
        .where(Article.id == func.any(bindparam("ids", type_=ARRAY(Text)))),
        {"ids": ids},
    )
    return {article_id: (event_time, sha) for article_id, event_time, sha in rows}


def _conflicting(stored_sha: str | None, new_sha: str | None) -> bool:
    return stored_sha is not None and new_sha is not None and stored_sha != new_sha


def _lock_story_buckets(conn: Connection, keys: set[str]) -> None:
    """Advisory xact locks on the keys' hash buckets, taken in sorted order so workers cannot deadlock."""
    if not keys:
        return
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(:ns, b) FROM ("
            " SELECT DISTINCT (hashtext(k) & :mask) AS b FROM unnest(CAST(:keys AS text[])) AS k ORDER BY b) s"
        ),
        {"ns": _LOCK_NAMESPACE, "mask": _LOCK_BUCKETS - 1, "keys": sorted(keys)},
    )


def _novelty(
    conn: Connection, new: Sequence[ScoredArticle], event_times: dict[str, datetime], window: timedelta
) -> dict[str, bool]:
    """novel[id] for each new article: False if an earlier copy of its story lies within ``window``."""
    novel = {a.id: True for a in new}
    keyed = [(a.story_key, event_times[a.id], pos, a.id) for pos, a in enumerate(new) if a.story_key]
    if not keyed:
        return novel
    lo = min(t for _, t, _, _ in keyed) - window
    hi = max(t for _, t, _, _ in keyed)
    stored: dict[str, list[datetime]] = defaultdict(list)
    for key, t in conn.execute(
        select(Article.story_key, Article.event_time)
        .where(Article.story_key == func.any(bindparam("keys", type_=ARRAY(Text))))
        .where(Article.event_time.between(lo, hi))
        .order_by(Article.event_time),
        {"keys": sorted({k for k, _, _, _ in keyed})},
    ):
        stored[key].append(t)
    previous: dict[str, datetime] = {}  # latest batch copy so far, in (event_time, batch position) order
    for key, t, _, article_id in sorted(keyed, key=lambda k: (k[1], k[2])):
        times = stored.get(key, [])
        has_stored = bisect.bisect_right(times, t) > bisect.bisect_left(times, t - window)
        has_batch = key in previous and previous[key] >= t - window
        novel[article_id] = not (has_stored or has_batch)
        previous[key] = t
    return novel


_DEMOTE_LATER_COPIES = text(
    """
    UPDATE articles a SET novel = false
    FROM unnest(CAST(:story_key AS text[]), CAST(:event_time AS timestamptz[])) AS n(story_key, event_time)
    WHERE a.story_key = n.story_key AND a.novel
      AND a.event_time > n.event_time AND a.event_time <= n.event_time + CAST(:window AS interval)
      AND NOT (a.id = ANY(CAST(:new_ids AS text[])))
    """
)


def _demote_later_copies(
    conn: Connection, inserted: Sequence[ScoredArticle], event_times: dict[str, datetime], window: timedelta
) -> None:
    """Stored copies that a newly inserted, *earlier* copy of their story now precedes within ``window`` stop
    being novel: the copies of a story arrive in any order (other partitions, replays, late scrapers), and
    novelty must not depend on which batch brought which (before, both stayed novel: the story counted twice).
    Runs under the same story-bucket locks as the insert."""
    keyed = [a for a in inserted if a.story_key]
    if not keyed:
        return
    conn.execute(_DEMOTE_LATER_COPIES, {
        "story_key": [a.story_key for a in keyed], "event_time": [event_times[a.id] for a in keyed],
        "window": window, "new_ids": [a.id for a in keyed],
    })


# One multi-row INSERT per table: parallel arrays unnested server-side (far cheaper than executemany).
_INSERT_ARTICLES = text(
    """
    INSERT INTO articles (id, title, body, source, url, published_at, event_time, tickers, lang, story_key,
                          novel, kafka_partition, kafka_offset, kafka_timestamp, content_sha256)
    SELECT id, title, body, source, url, published_at, event_time, CAST(tickers AS text[]), lang, story_key,
           novel, kafka_partition, kafka_offset, kafka_timestamp, content_sha256
    FROM unnest(CAST(:id AS text[]), CAST(:title AS text[]), CAST(:body AS text[]), CAST(:source AS text[]),
                CAST(:url AS text[]), CAST(:published_at AS timestamptz[]), CAST(:event_time AS timestamptz[]),
                CAST(:tickers AS text[]), CAST(:lang AS text[]), CAST(:story_key AS text[]),
                CAST(:novel AS boolean[]), CAST(:kafka_partition AS integer[]), CAST(:kafka_offset AS bigint[]),
                CAST(:kafka_timestamp AS timestamptz[]), CAST(:content_sha256 AS text[]))
         AS u(id, title, body, source, url, published_at, event_time, tickers, lang, story_key, novel,
              kafka_partition, kafka_offset, kafka_timestamp, content_sha256)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)

_INSERT_SCORES = text(
    """
    INSERT INTO scores (article_id, model_version, topic, topic_confidence, sentiment, p_negative, p_neutral,
                        p_positive, score, event_time)
    SELECT * FROM unnest(CAST(:article_id AS text[]), CAST(:model_version AS text[]), CAST(:topic AS text[]),
                         CAST(:topic_confidence AS float8[]), CAST(:sentiment AS text[]),
                         CAST(:p_negative AS float8[]), CAST(:p_neutral AS float8[]), CAST(:p_positive AS float8[]),
                         CAST(:score AS float8[]), CAST(:event_time AS timestamptz[]))
    ON CONFLICT (article_id, model_version) DO NOTHING
    RETURNING article_id
    """
)


def _quote(value: Any) -> str:
    """One element of a PostgreSQL array literal (NULL, or a double-quoted, escaped string)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        value = value.isoformat()
    elif isinstance(value, float):
        value = repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(values: Sequence[Any]) -> str:
    """A whole column as ONE array literal string.

    Sent as a single parameter and parsed by PostgreSQL's array_in, this is far cheaper than psycopg2's
    ``ARRAY[...]`` rendering (one SQL expression per element for the parser to chew through).
    """
    return "{" + ",".join(map(_quote, values)) + "}"


def _article_columns(
    new: Sequence[ScoredArticle], event_times: dict[str, datetime], novel: dict[str, bool]
) -> dict[str, str]:
    return {
        "id": _array([a.id for a in new]),
        "title": _array([a.title for a in new]),
        "body": _array([a.body for a in new]),
        "source": _array([a.source for a in new]),
        "url": _array([a.url for a in new]),
        "published_at": _array([a.published_at for a in new]),
        "event_time": _array([event_times[a.id] for a in new]),
        # Ragged: each row's tickers travel as a text[] literal inside the outer array, cast server-side.
        "tickers": _array([_array(list(a.tickers)) for a in new]),
        "lang": _array([a.lang for a in new]),
        "story_key": _array([a.story_key for a in new]),
        "novel": _array([novel[a.id] for a in new]),
        "kafka_partition": _array([a.kafka_partition for a in new]),
        "kafka_offset": _array([a.kafka_offset for a in new]),
        "kafka_timestamp": _array([a.kafka_timestamp for a in new]),
        "content_sha256": _array([a.content_sha256 for a in new]),
    }


def _score_columns(items: Sequence[ScoredArticle], event_times: dict[str, datetime]) -> dict[str, str]:
    return {
        "article_id": _array([a.id for a in items]),
        "model_version": _array([a.model_version for a in items]),
        "topic": _array([a.topic for a in items]),
        "topic_confidence": _array([float(a.topic_confidence) for a in items]),
        "sentiment": _array([a.sentiment for a in items]),
        "p_negative": _array([float(a.p_negative) for a in items]),
        "p_neutral": _array([float(a.p_neutral) for a in items]),
        "p_positive": _array([float(a.p_positive) for a in items]),
        "score": _array([float(a.score) for a in items]),
        "event_time": _array([event_times[a.id] for a in items]),
    }


# -- reads ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TopicSummaryRow:
    topic: str
    n: int
    negative: int
    neutral: int
    positive: int
    mean_score: float


def topic_summary(conn: Connection, since: datetime, model_version: str | None = None) -> list[TopicSummaryRow]:
    """Per-topic sentiment counts of articles with event_time >= since.

    With ``model_version`` None each article counts once, by its current score (``storage.scores``: the one
    definition alerts and dashboards use); otherwise by that version's score.
    """
    source = (current_scores_from(":since", "'infinity'") if model_version is None
              else "scores s JOIN articles a ON a.id = s.article_id")
    where = "" if model_version is None else "WHERE s.event_time >= :since AND s.model_version = :version"
    rows = conn.execute(
        text(
            f"""SELECT s.topic, count(*), count(*) FILTER (WHERE s.sentiment = 'negative'),
                       count(*) FILTER (WHERE s.sentiment = 'neutral'),
                       count(*) FILTER (WHERE s.sentiment = 'positive'), avg(s.score)
                FROM {source} {where}
                GROUP BY s.topic ORDER BY s.topic"""
        ),
        {"since": since, "version": model_version},
    )
    return [
        TopicSummaryRow(topic, int(n), int(neg), int(neu), int(pos), float(mean))
        for topic, n, neg, neu, pos, mean in rows
    ]


def count_articles(conn: Connection, *, novel: bool | None = None) -> int:
    stmt = select(func.count()).select_from(Article)
    if novel is not None:
        stmt = stmt.where(Article.novel.is_(novel))
    return int(conn.execute(stmt).scalar_one())


def count_scores(conn: Connection, model_version: str | None = None) -> int:
    stmt = select(func.count()).select_from(Score)
    if model_version is not None:
        stmt = stmt.where(Score.model_version == model_version)
    return int(conn.execute(stmt).scalar_one())


def articles_without_score(conn: Connection, model_version: str) -> int:
    """Articles lacking a score from ``model_version`` (tests assert 0 after a crash/restart)."""
    stmt = (
        select(func.count())
        .select_from(Article)
        .where(~select(Score.article_id).where(Score.article_id == Article.id, Score.model_version == model_version).exists())
    )
    return int(conn.execute(stmt).scalar_one())
