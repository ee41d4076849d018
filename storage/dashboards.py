"""SQL behind the Grafana panels, written for Grafana's PostgreSQL datasource (not run by our processes).

Queries use Grafana's macros (``$__timeFilter``, ``$__timeGroupAlias``, ``$__timeFrom()``, ``$__interval_ms``)
so every panel follows the dashboard's time picker, and the ``$ticker`` variable for drill-down. They live here,
beside the rest of our SQL, so ``tests/dashboards`` can run each one against the real schema.

Conventions that keep the numbers honest:

* an article may be scored by several model versions (hot reload, backfills): ``_LATEST_SCORES`` keeps the
  newest score per article, so nothing is counted twice;
* syndicated copies of a story (``articles.novel = false``) are left out of sentiment and negative share;
* ``TICKER_FILTER`` expands to true for "All" (custom all value ``'__all'``) and otherwise matches articles that
  mention any selected ticker (``&&`` uses the GIN index on ``articles.tickers``).
"""

from __future__ import annotations

# Custom "All" value of the ticker variable. Grafana inserts a custom all value verbatim (unquoted), so it is
# itself a SQL string literal; single selections are quoted by the datasource ('AAPL','MSFT').
TICKER_ALL_VALUE = "'__all'"

TICKER_FILTER = "('__all' IN (${ticker}) OR a.tickers && ARRAY[${ticker}]::text[])"

# Newest score per article in the time range (one row per article even after a model change).
_LATEST_SCORES = """\
WITH s AS (
  SELECT DISTINCT ON (article_id) *
  FROM scores
  WHERE $__timeFilter(event_time)
  ORDER BY article_id, scored_at DESC
)"""

TICKER_VARIABLE = """\
SELECT DISTINCT t AS ticker
FROM articles a, unnest(a.tickers) AS t
WHERE $__timeFilter(a.event_time)
ORDER BY 1
LIMIT 1000"""

SENTIMENT_INDEX_BY_TOPIC = f"""\
{_LATEST_SCORES}
SELECT
  $__timeGroupAlias(s.event_time, $__interval),
  s.topic AS metric,
  avg(s.score) AS value
FROM s
JOIN articles a ON a.id = s.article_id
WHERE a.novel
  AND {TICKER_FILTER}
GROUP BY 1, 2
ORDER BY 1, 2"""

NEGATIVE_SHARE_BY_TOPIC = f"""\
{_LATEST_SCORES}
SELECT
  $__timeGroupAlias(s.event_time, $__interval),
  s.topic AS metric,
  avg((s.sentiment = 'negative')::int) AS value
FROM s
JOIN articles a ON a.id = s.article_id
WHERE a.novel
  AND {TICKER_FILTER}
GROUP BY 1, 2
ORDER BY 1, 2"""

ARTICLE_VOLUME = f"""\
SELECT
  $__timeGroupAlias(a.event_time, $__interval),
  count(*) FILTER (WHERE a.novel) AS "novel",
  count(*) FILTER (WHERE NOT a.novel) AS "syndicated"
FROM articles a
WHERE $__timeFilter(a.event_time)
  AND {TICKER_FILTER}
GROUP BY 1
ORDER BY 1"""

MOST_NEGATIVE_HEADLINES = f"""\
{_LATEST_SCORES}
SELECT
  a.event_time AS "time",
  a.title AS headline,
  a.source,
  array_to_string(a.tickers, ', ') AS tickers,
  s.topic,
  s.p_negative,
  s.model_version,
  a.url
FROM s
JOIN articles a ON a.id = s.article_id
WHERE s.sentiment = 'negative'
  AND {TICKER_FILTER}
ORDER BY a.event_time DESC, s.p_negative DESC
LIMIT 50"""

# Alerts overlapping the time range, as Grafana annotations (time, timeend, text, tags): a region from the
# start of the spike to its resolution (or to the end of the range while it still fires).
ALERT_ANNOTATIONS = """\
SELECT
  started_at AS "time",
  COALESCE(resolved_at, $__timeTo()::timestamptz) AS timeend,
  severity || ': ' || rule || ' on ' || scope_type || ' ' || scope || ' (' || state || ')' AS text,
  concat_ws(',', severity, scope_type, scope, state) AS tags
FROM alerts
WHERE started_at <= $__timeTo()::timestamptz
  AND COALESCE(resolved_at, 'infinity'::timestamptz) >= $__timeFrom()::timestamptz
ORDER BY started_at"""

ACTIVE_MODEL = """\
SELECT
  m.version AS "active model",
  m.updated_at AS "since",
  m.updated_by AS "by"
FROM model_aliases m
WHERE m.alias = 'active'"""

MODEL_VERSIONS_IN_USE = """\
SELECT
  model_version,
  count(*) AS scored,
  min(scored_at) AS first_scored,
  max(scored_at) AS last_scored
FROM scores
WHERE $__timeFilter(scored_at)
GROUP BY model_version
ORDER BY last_scored DESC"""

# Scores written per minute (throughput of the stream workers, as the database sees it).
SCORED_PER_MINUTE = """\
SELECT
  $__timeGroupAlias(scored_at, $__interval),
  count(*) * 60000.0 / $__interval_ms AS "scored per minute"
FROM scores
WHERE $__timeFilter(scored_at)
GROUP BY 1
ORDER BY 1"""

# Ingest-to-score latency: how long an article waited in Kafka and the worker before its score landed.
SCORING_LATENCY = """\
SELECT
  $__timeGroupAlias(s.scored_at, $__interval),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.scored_at - a.ingested_at)) AS "p50",
  percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM s.scored_at - a.ingested_at)) AS "p95"
FROM scores s
JOIN articles a ON a.id = s.article_id
WHERE $__timeFilter(s.scored_at)
GROUP BY 1
ORDER BY 1"""

OPEN_ALERTS = """\
SELECT count(*) AS "open alerts"
FROM alerts
WHERE state IN ('firing', 'acknowledged')"""
