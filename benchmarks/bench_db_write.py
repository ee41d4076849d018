"""The worker's batch write: hand-written array literals (shipped) vs psycopg2's ``execute_values``.

``storage.articles`` sends each column of a batch as ONE PostgreSQL array literal and unnests it
server-side. Issue 9 asked to keep that encoder only if a benchmark shows it beats the library way; this
is that benchmark. Both variants insert the same articles + scores rows (ON CONFLICT DO NOTHING, RETURNING)
in worker-sized batches on the same server, into fresh tables each time, one after the other in every round;
which variant goes first alternates from round to round. The speed-up reported is the median of the per-round
ratios (each round's two variants ran back to back under the same load), printed with every round's ratio.

    python benchmarks/bench_db_write.py [--batches 200] [--batch-size 32] [--rounds 3]

Embedded PostgreSQL unless MARKETMOOD_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg2.extras import execute_values  # noqa: E402
from sqlalchemy import text  # noqa: E402

from storage import migrate  # noqa: E402
from storage.articles import _INSERT_ARTICLES, _INSERT_SCORES, _article_columns, _score_columns  # noqa: E402
from storage.db import make_engine  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402

ARTICLE_SQL = """INSERT INTO articles (id, title, body, source, url, published_at, event_time, tickers, lang,
  story_key, novel, kafka_partition, kafka_offset, kafka_timestamp, content_sha256) VALUES %s
  ON CONFLICT (id) DO NOTHING RETURNING id"""
SCORE_SQL = """INSERT INTO scores (article_id, model_version, topic, topic_confidence, sentiment, p_negative,
  p_neutral, p_positive, score, event_time) VALUES %s ON CONFLICT (article_id, model_version) DO NOTHING
  RETURNING article_id"""


class Row:
    """The fields of one ScoredArticle the two inserts need (same shape as storage.articles.ScoredArticle)."""

    def __init__(self, i: int, run: str) -> None:
        self.id, self.title = f"{run}-{i}", f"Headline {i} about oil prices and the Fed's next move"
        self.body, self.source, self.url = "Body text " * 20, "bench", f"https://example.test/{i}"
        self.published_at = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=i)
        self.tickers, self.lang, self.story_key = ("XOM", "CVX"), "en", f"key-{i}"
        self.kafka_partition, self.kafka_offset, self.kafka_timestamp = i % 4, i, self.published_at
        self.content_sha256, self.model_version, self.topic = f"sha{i}", "bench-v1", "Energy | Oil"
        self.topic_confidence, self.sentiment = 0.9, "negative"
        self.p_negative, self.p_neutral, self.p_positive, self.score = 0.7, 0.2, 0.1, -0.6


def write_arrays(conn, rows: list[Row]) -> None:
    times = {r.id: r.published_at for r in rows}
    conn.execute(_INSERT_ARTICLES, _article_columns(rows, times, {r.id: True for r in rows})).all()
    conn.execute(_INSERT_SCORES, _score_columns(rows, times)).all()


def write_execute_values(conn, rows: list[Row]) -> None:
    cursor = conn.connection.dbapi_connection.cursor()
    execute_values(cursor, ARTICLE_SQL, [
        (r.id, r.title, r.body, r.source, r.url, r.published_at, r.published_at, list(r.tickers), r.lang,
         r.story_key, True, r.kafka_partition, r.kafka_offset, r.kafka_timestamp, r.content_sha256) for r in rows
    ], page_size=len(rows), fetch=True)
    execute_values(cursor, SCORE_SQL, [
        (r.id, r.model_version, r.topic, r.topic_confidence, r.sentiment, r.p_negative, r.p_neutral, r.p_positive,
         r.score, r.published_at) for r in rows
    ], page_size=len(rows), fetch=True)


def timed(engine, writer, batches: int, size: int, run: str) -> float:
    rows = [Row(i, run) for i in range(batches * size)]
    started = time.perf_counter()
    for b in range(batches):
        with engine.begin() as conn:
            writer(conn, rows[b * size:(b + 1) * size])
    return batches * size / (time.perf_counter() - started)


SHIPPED, LIBRARY = "array literals (shipped)", "execute_values"


def round_order(round_index: int) -> tuple[str, str]:
    """Which variant runs first alternates per round, so neither always gets the fresher (or the later) server."""
    return (SHIPPED, LIBRARY) if round_index % 2 == 0 else (LIBRARY, SHIPPED)


def summarize(results: dict[str, list[float]]) -> dict:
    """Per-round ratios shipped / execute_values (each pair ran back to back) and their median.

    The ratio of the two medians would divide numbers from different rounds (load on a shared machine moves
    between rounds), so it is not reported as the speed-up."""
    ratios = [a / b for a, b in zip(results[SHIPPED], results[LIBRARY], strict=True)]
    return {
        "rows_per_s": {name: list(values) for name, values in results.items()},
        "median_rows_per_s": {name: statistics.median(values) for name, values in results.items()},
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="batches per variant and round")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch (the worker's default)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each timing both variants (first one alternates); the median ratio is reported")
    parser.add_argument("--database-url", help="PostgreSQL URL [default: an embedded server]")
    args = parser.parse_args()
    server = None
    url = args.database_url
    if url is None:
        server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="mm-dbbench-")) / "pg")
        url = server.start()
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        writers = {SHIPPED: write_arrays, LIBRARY: write_execute_values}
        results: dict[str, list[float]] = {SHIPPED: [], LIBRARY: []}
        for r in range(args.rounds):
            for name in round_order(r):
                with engine.begin() as conn:
                    conn.execute(text("TRUNCATE scores, articles"))
                results[name].append(timed(engine, writers[name], args.batches, args.batch_size, f"r{r}"))
        engine.dispose()
    finally:
        if server is not None:
            server.stop()
    summary = summarize(results)
    print("first per round: " + ", ".join(round_order(r)[0] for r in range(args.rounds)))
    for name, values in results.items():
        print(f"{name:26s} rows/s per round: {', '.join(f'{v:,.0f}' for v in values)}  "
              f"median {summary['median_rows_per_s'][name]:,.0f}")
    print(f"ratio shipped / execute_values per round: {', '.join(f'{x:.2f}' for x in summary['ratios'])}; "
          f"median of the per-round ratios {summary['median_ratio']:.2f} (batches of {args.batch_size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
