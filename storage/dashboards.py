"""SQL behind the analysts' panels, the ``GET /sentiment`` read API and ``marketmood report``: one builder.

Each query is built by a function from a :class:`Dialect`, which says how the query names its inputs:

* :data:`GRAFANA` writes Grafana's macros and dashboard variables (``$__timeFrom()``, ``$__interval_ms``,
  ``${topic}``, ``${tz}``, ...), for the panels (``marketmood/dashboards``) and the report, which expands
  them the way Grafana does (``marketmood.dashboards.macros``);
* :data:`BIND` writes bind parameters (``:t_from``, ``:topics``, ...) for the read API (``params_for``
  maps a request onto them).

So a panel, the API and the report cannot disagree: they run the same SQL text apart from the placeholders.
``tests/marketmood/dashboards`` runs every query on real PostgreSQL as Grafana's read-only role.

Conventions that keep the numbers honest:

* every sentiment number comes from ``current_scores(from, to)`` (``storage.scores``): one score per
  article, the active model's (or the newest of a version that was ever in service), so a rolled-back,
  rejected or shadow version's scores never reach a chart;
* syndicated copies (``articles.novel = false``) are left out of sentiment; volume shows them apart;
* a bucket with fewer than ``min_articles`` novel articles has no mean and no band (too noisy to show); the
  minimum is at least 1 whatever is asked (a bucket of syndicated copies only has no mean: 0 divided by 0);
  the index is an exponential moving average over buckets (SQL aggregate ``ema`` of migration 0006) with
  ``alpha = 2 / (span + 1)``; empty buckets carry it forward;
* the band is the bucket mean +- 1.96 standard errors (normal approximation of the 95% interval);
* volume is a rate (articles per hour), independent of the bucket size: a bucket's articles over the part of
  it that lies in the range and in the past (the first bucket starts before the range, the current one ends
  after now);
* buckets start at local midnight of the market's time zone (``tz``), so daily buckets are trading days;
* a filter that is "All" is true (Grafana inserts the custom all value ``'__all'``; the API passes NULL);
* a single-value knob goes into the SQL as a quoted string cast to its type (``${min_articles:sqlstring}``):
  Grafana inserts a single value unquoted, so a value typed into the URL would otherwise be SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from storage.alerts import GRAFANA_ANNOTATIONS_SQL
from storage.scores import current_scores_from

# Custom "All" value of the multi-value variables. Grafana inserts a custom all value verbatim (unquoted), so
# it is itself a SQL string literal; selections are quoted by the datasource ('AAPL','MSFT').
ALL_VALUE = "'__all'"
TICKER_ALL_VALUE = ALL_VALUE  # kept for readers of the older name

SEVERITIES = ("critical", "error", "warning", "info")
TIME_ZONES = ("America/New_York", "UTC", "Europe/London", "Europe/Berlin", "Asia/Tokyo", "Asia/Hong_Kong",
              "Australia/Sydney")
MIN_ARTICLES_CHOICES = ("1", "3", "5", "10", "20")
DEFAULT_MIN_ARTICLES = 5
SMOOTHING_CHOICES = ("1", "3", "6", "12", "24")  # EMA span in buckets; 1 = no smoothing
DEFAULT_SPAN = 6
THRESHOLD = 0.2  # fixed index thresholds: below -0.2 is red, above +0.2 is green (panels and report)
MOVERS_RECENT = timedelta(hours=24)
MOVERS_BASELINE = timedelta(days=30)
SD_FLOOR = 0.05  # the z-score's baseline spread never goes below this (a scope whose news never varies)
NEWS_SEARCH_URL = "https://news.google.com/search?q="
Grouping = Literal["none", "topic", "ticker"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a query names its inputs (time bounds, bucket size, filters, knobs)."""

    name: str
    t_from: str
    t_to: str
    bucket_s: str  # seconds per bucket (SQL expression)
    tz: str
    min_articles: str
    span: str

    def is_all(self, variable: str) -> str:
        """SQL that is true when ``variable`` selects All."""
        return f"'__all' IN (${{{variable}}})" if self.name == "grafana" else f"CAST(:{variable} AS text[]) IS NULL"

    def matches(self, variable: str, column: str, *, array: bool = False) -> str:
        """SQL that is true when ``column`` is in the selection of ``variable`` (or the selection is All)."""
        if self.name == "grafana":
            test = f"{column} && ARRAY[${{{variable}}}]::text[]" if array else f"{column} IN (${{{variable}}})"
        else:
            param = f"CAST(:{variable} AS text[])"
            test = f"{column} && {param}" if array else f"{column} = ANY({param})"
        return f"({self.is_all(variable)} OR {test})"


GRAFANA = Dialect("grafana", t_from="$__timeFrom()::timestamptz", t_to="$__timeTo()::timestamptz",
                  bucket_s="($__interval_ms / 1000.0)", tz="'${tz}'",
                  min_articles="CAST(${min_articles:sqlstring} AS integer)",
                  span="CAST(${smoothing:sqlstring} AS integer)")
BIND = Dialect("bind", t_from="CAST(:t_from AS timestamptz)", t_to="CAST(:t_to AS timestamptz)",
               bucket_s="CAST(:bucket_s AS double precision)", tz="CAST(:tz AS text)",
               min_articles="CAST(:min_articles AS integer)", span="CAST(:span AS integer)")


def params_for(
    *, t_from: datetime, t_to: datetime, bucket: timedelta, topics: Sequence[str] | None = None,
    tickers: Sequence[str] | None = None, sources: Sequence[str] | None = None, tz: str = "UTC",
    min_articles: int = DEFAULT_MIN_ARTICLES, span: int = DEFAULT_SPAN,
) -> dict[str, Any]:
    """Bind parameters of a :data:`BIND` query (``None`` or empty = All)."""
    return {
        "t_from": t_from, "t_to": t_to, "bucket_s": bucket.total_seconds(), "tz": tz,
        "min_articles": min_articles, "span": span,
        "topic": list(topics) if topics else None, "ticker": list(tickers) if tickers else None,
        "source": list(sources) if sources else None,
    }


def _min_articles(d: Dialect) -> str:
    """The minimum article count, at least 1: a bucket or scope of no novel article has no mean to show
    (``1.96 * sd / sqrt(0)`` is a division by zero)."""
    return f"GREATEST({d.min_articles}, 1)"


def _filters(d: Dialect) -> str:
    return (f"{d.matches('topic', 's.topic')}\n    AND {d.matches('ticker', 'a.tickers', array=True)}\n"
            f"    AND {d.matches('source', 'a.source')}")


# Buckets shorter than a day are real spans of time; a day or longer is a calendar day (week) of the market.
# Binning sub-day buckets on local wall-clock time breaks on the days the clocks change: a spring-forward day
# maps local 02:00 and 03:00 to one instant (a row twice, its articles counted twice), a fall-back day folds
# two real hours into one local 01:00 bucket. Days and weeks start at local midnight; sub-day buckets are aligned
# to the zone's midnight of 2001-01-01 (standard time), so under summer time a 6 h bucket starts at 01:00 local.
_ORIGIN = "TIMESTAMP '2001-01-01'"


def _is_sub_day(d: Dialect) -> str:
    return f"{d.bucket_s} < 86400"


def _bucket(d: Dialect, column: str) -> str:
    """Start of the bucket holding ``column`` (a timestamptz): sub-day buckets bin absolute time from a local
    midnight, longer ones bin local time from local midnight."""
    stride = f"make_interval(secs => {d.bucket_s})"
    return (f"(CASE WHEN {_is_sub_day(d)} THEN date_bin({stride}, {column}, {_ORIGIN} AT TIME ZONE {d.tz}) "
            f"ELSE date_bin({stride}, {column} AT TIME ZONE {d.tz}, {_ORIGIN}) AT TIME ZONE {d.tz} END)")


def _bucket_end(d: Dialect, start: str) -> str:
    """End of the bucket starting at ``start``: a local day is 23 or 25 hours when the clocks change."""
    stride = f"make_interval(secs => {d.bucket_s})"
    return (f"(CASE WHEN {_is_sub_day(d)} THEN ({start}) + {stride} "
            f"ELSE (({start}) AT TIME ZONE {d.tz} + {stride}) AT TIME ZONE {d.tz} END)")


def _covered_seconds(d: Dialect, start: str) -> str:
    """Seconds of the bucket starting at ``start`` that can hold an article of the query: those in the range and
    in the past. The first bucket starts before ``t_from`` (it holds ``t_from``), the current one ends after
    now; dividing their counts by the whole bucket understated their rate. NULL for a bucket wholly ahead."""
    return (f"NULLIF(GREATEST(extract(epoch FROM LEAST({_bucket_end(d, start)}, {d.t_to}, now()) - "
            f"GREATEST({start}, {d.t_from}))::double precision, 0), 0)")


def _bucket_grid(d: Dialect) -> str:
    """Every bucket start from the one holding ``t_from`` to ``t_to`` (column ``bucket``, timestamptz), the same
    buckets :func:`_bucket` assigns; only one branch returns rows."""
    stride = f"make_interval(secs => {d.bucket_s})"
    return f"""(
    SELECT gs AS bucket
    FROM generate_series(date_bin({stride}, {d.t_from}, {_ORIGIN} AT TIME ZONE {d.tz}), {d.t_to}, {stride}) AS gs
    WHERE {_is_sub_day(d)}
    UNION ALL
    SELECT gs AT TIME ZONE {d.tz}
    FROM generate_series(date_bin({stride}, {d.t_from} AT TIME ZONE {d.tz}, {_ORIGIN}), {d.t_to} AT TIME ZONE {d.tz},
                         {stride}) AS gs
    WHERE NOT ({_is_sub_day(d)})
  )"""


TOP_TICKERS = 10  # with All tickers selected, the per-ticker series are the busiest this many


def sentiment_series(d: Dialect, by: Grouping = "none", *, top_tickers: int = TOP_TICKERS) -> str:
    """Per bucket (and per topic or ticker): smoothed index, bucket mean with its 95% band, negative share,
    novel and syndicated article counts and the article rate per hour. Columns:
    ``time, [metric,] index, mean, lower, upper, negative_share, articles, copies, per_hour``."""
    series = {"none": "'all'::text", "topic": "c.topic", "ticker": "t.ticker"}[by]
    unnest = "CROSS JOIN LATERAL unnest(c.tickers) AS t(ticker)" if by == "ticker" else ""
    keep = ""
    if by == "ticker":  # the selected tickers, or with All the busiest ones (a chart of 1000 lines is noise)
        keep = (f"WHERE {d.matches('ticker', 't.ticker')} AND t.ticker IN (SELECT t2 FROM cur c2, "
                f"unnest(c2.tickers) AS t2 WHERE c2.novel GROUP BY t2 ORDER BY count(*) DESC, t2 "
                f"LIMIT CASE WHEN {d.is_all('ticker')} THEN {top_tickers} END)")  # LIMIT NULL = no limit
    metric = "" if by == "none" else "  g.series AS metric,\n"
    order = "1" if by == "none" else "1, 2"
    return f"""\
WITH cur AS (
  SELECT s.topic, s.score, s.sentiment, s.event_time, a.tickers, a.novel
  FROM {current_scores_from(d.t_from, d.t_to)}
  WHERE {_filters(d)}
),
b AS (
  SELECT {_bucket(d, 'c.event_time')} AS bucket, {series} AS series,
         count(*) FILTER (WHERE c.novel) AS n,
         count(*) FILTER (WHERE NOT c.novel) AS copies,
         avg(c.score) FILTER (WHERE c.novel) AS mean,
         stddev_samp(c.score) FILTER (WHERE c.novel) AS sd,
         avg((c.sentiment = 'negative')::int) FILTER (WHERE c.novel) AS negative_share
  FROM cur c {unnest}
  {keep}
  GROUP BY 1, 2
),
grid AS (
  SELECT sr.series, gb.bucket
  FROM (SELECT DISTINCT series FROM b) sr
  CROSS JOIN {_bucket_grid(d)} AS gb
),
g AS (
  SELECT grid.bucket, grid.series, COALESCE(b.n, 0) AS n, COALESCE(b.copies, 0) AS copies,
         CASE WHEN b.n >= {_min_articles(d)} THEN b.mean END AS mean,
         CASE WHEN b.n >= {_min_articles(d)} THEN 1.96 * COALESCE(b.sd, 0) / sqrt(b.n) END AS half,
         CASE WHEN b.n >= {_min_articles(d)} THEN b.negative_share END AS negative_share
  FROM grid LEFT JOIN b ON b.bucket = grid.bucket AND b.series = grid.series
  WHERE grid.bucket < {d.t_to}
)
SELECT
  g.bucket AS "time",
{metric}  ema(g.mean, 2.0 / ({d.span} + 1)) OVER (PARTITION BY g.series ORDER BY g.bucket) AS "index",
  g.mean AS "mean",
  g.mean - g.half AS "lower",
  g.mean + g.half AS "upper",
  g.negative_share AS "negative_share",
  g.n AS "articles",
  g.copies AS "copies",
  (g.n + g.copies) * 3600.0 / {_covered_seconds(d, 'g.bucket')} AS "per_hour"
FROM g
ORDER BY {order}"""


def _columns(inner: str, columns: str, order: str = "1") -> str:
    """A panel's view of a builder query: only the columns it draws, renamed for its legend."""
    return f"SELECT {columns}\nFROM (\n{inner}\n) q\nORDER BY {order}"


def top_movers(d: Dialect, *, limit: int = 50) -> str:
    """Topics and tickers ranked by how far their last 24 h of sentiment moved from the previous 30 days.

    ``z = (mean_24h - mean_30d) / (max(sd_30d, SD_FLOOR) / sqrt(n_24h))``: the one-sample z statistic of the
    recent mean against the scope's own baseline articles. ``volume_ratio`` = articles in the last 24 h over
    the baseline's articles per day (per day of baseline the database actually has, at most 30). Anchored
    at the end of the time range; scopes need ``min_articles`` in both periods."""
    start = f"({d.t_to} - interval '{MOVERS_RECENT.total_seconds() + MOVERS_BASELINE.total_seconds():.0f} seconds')"
    recent = f"({d.t_to} - interval '{MOVERS_RECENT.total_seconds():.0f} seconds')"
    return f"""\
WITH cur AS (
  SELECT s.topic, s.score, s.event_time, a.tickers
  FROM {current_scores_from(start, d.t_to)}
  WHERE a.novel AND {d.matches('source', 'a.source')}
),
scoped AS (
  SELECT 'topic' AS scope_type, c.topic AS scope, c.score, c.event_time >= {recent} AS recent
  FROM cur c WHERE {d.matches('topic', 'c.topic')}
  UNION ALL
  SELECT 'ticker', t.ticker, c.score, c.event_time >= {recent}
  FROM cur c CROSS JOIN LATERAL unnest(c.tickers) AS t(ticker) WHERE {d.matches('ticker', 't.ticker')}
),
span AS (  -- days of baseline actually covered (a young database has less than 30)
  SELECT GREATEST(extract(epoch FROM {recent} - min(event_time)) / 86400.0, 1.0) AS days FROM cur
),
st AS (
  SELECT scope_type, scope,
         count(*) FILTER (WHERE recent) AS n_recent, avg(score) FILTER (WHERE recent) AS m_recent,
         count(*) FILTER (WHERE NOT recent) AS n_base, avg(score) FILTER (WHERE NOT recent) AS m_base,
         stddev_samp(score) FILTER (WHERE NOT recent) AS sd_base
  FROM scoped GROUP BY 1, 2
)
SELECT
  scope_type,
  scope,
  m_recent AS "sentiment_24h",
  m_base AS "sentiment_30d",
  m_recent - m_base AS "change",
  (m_recent - m_base) / (GREATEST(COALESCE(sd_base, 0), {SD_FLOOR}) / sqrt(n_recent)) AS "z",
  n_recent AS "articles_24h",
  n_recent / (n_base / (SELECT days FROM span)) AS "volume_ratio"
FROM st
WHERE n_recent >= {_min_articles(d)} AND n_base >= {_min_articles(d)}
ORDER BY abs((m_recent - m_base) / (GREATEST(COALESCE(sd_base, 0), {SD_FLOOR}) / sqrt(n_recent))) DESC, 1, 2
LIMIT {limit}"""


def headlines(d: Dialect, tone: Literal["negative", "positive"], *, limit: int = 50) -> str:
    """Original stories only (the novel copy), strongest ``tone`` first, with how often and where the story
    was syndicated, the topic's confidence and a link that works (the article's URL, else a news search)."""
    prob = "s.p_negative" if tone == "negative" else "s.p_positive"
    return f"""\
SELECT
  a.event_time AS "time",
  to_char(a.event_time AT TIME ZONE {d.tz}, 'YYYY-MM-DD HH24:MI') AS "local_time",
  a.title AS "headline",
  s.score AS "score",
  {prob} AS "p_{tone}",
  s.topic AS "topic",
  s.topic_confidence AS "topic_confidence",
  array_to_string(a.tickers, ', ') AS "tickers",
  1 + cp.copies AS "copies",
  cp.sources AS "sources",
  COALESCE(NULLIF(a.url, ''), '{NEWS_SEARCH_URL}' || url_encode(a.title)) AS "link"
FROM {current_scores_from(d.t_from, d.t_to)}
CROSS JOIN LATERAL (
  SELECT count(c.id) AS copies,
         array_to_string(array(SELECT DISTINCT x FROM unnest(array_agg(c.source) || a.source) AS x
                               WHERE x IS NOT NULL ORDER BY 1), ', ') AS sources
  FROM articles c
  WHERE a.story_key IS NOT NULL AND c.story_key = a.story_key AND NOT c.novel AND c.event_time >= a.event_time
    AND NOT EXISTS (SELECT 1 FROM articles o WHERE o.story_key = a.story_key AND o.novel
                    AND o.event_time > a.event_time AND o.event_time <= c.event_time)
) cp
WHERE a.novel AND s.sentiment = '{tone}'
  AND {_filters(d)}
ORDER BY {prob} DESC, a.event_time DESC
LIMIT {limit}"""


def _alert_filter(d: Dialect, alias: str) -> str:
    return (f"(({alias}.scope_type = 'topic' AND {d.matches('topic', f'{alias}.scope')}) OR "
            f"({alias}.scope_type = 'ticker' AND {d.matches('ticker', f'{alias}.scope')}))")


def alert_annotations(severity: str) -> str:
    """One severity's alerts as annotation regions, filtered by the topic/ticker selection (Grafana only).

    The text and tags are ``storage.alerts.GRAFANA_ANNOTATIONS_SQL`` (docs/alerts.md: evidence in the text,
    tags with severity, state, scope and rule); tags go out comma-separated, as Grafana reads them."""
    d = GRAFANA
    return f"""\
SELECT x."time", x."timeend", x."text", array_to_string(x."tags", ',') AS "tags"
FROM (
{GRAFANA_ANNOTATIONS_SQL}
) x
WHERE '{severity}' = ANY(x."tags")
  AND EXISTS (SELECT 1 FROM unnest(x."tags") AS tag
              WHERE (tag LIKE 'topic:%' AND {d.matches('topic', 'substr(tag, 7)')})
                 OR (tag LIKE 'ticker:%' AND {d.matches('ticker', 'substr(tag, 8)')}))
ORDER BY 1"""


def alerts_table(d: Dialect, *, limit: int = 100) -> str:
    """Alerts overlapping the range (silenced ones too), newest first, with their evidence."""
    return f"""\
SELECT
  al.started_at AS "time",
  al.resolved_at AS "resolved",
  al.severity,
  al.state,
  al.scope_type,
  al.scope,
  al.rule,
  (al.evidence->>'current_share')::float AS "negative_share",
  (al.evidence->>'baseline_share')::float AS "baseline_share",
  (al.evidence->>'volume')::int AS "volume",
  (al.evidence->>'p_value')::float AS "p_value",
  al.evidence->'headlines'->0->>'title' AS "top_headline",
  al.evidence->'headlines'->0->>'url' AS "top_headline_url"
FROM alerts al
WHERE al.started_at <= {d.t_to} AND COALESCE(al.resolved_at, 'infinity'::timestamptz) >= {d.t_from}
  AND {_alert_filter(d, 'al')}
ORDER BY al.started_at DESC, al.id DESC
LIMIT {limit}"""


def model_changes(d: Dialect) -> str:
    """Moves of the active model alias in the range (promotions and rollbacks)."""
    return f"""\
SELECT
  h.changed_at AS "time",
  h.version,
  h.changed_by AS "by",
  h.reason
FROM model_alias_history h
WHERE h.alias = 'active' AND h.changed_at BETWEEN {d.t_from} AND {d.t_to}
ORDER BY h.changed_at, h.id"""


# --- the Grafana texts (module constants: definitions.py and the tests refer to them) -------------------

SENTIMENT_SELECTION = _columns(
    sentiment_series(GRAFANA),
    '"time", "index" AS "index (EMA)", "mean" AS "bucket mean", "lower" AS "lower 95%", '
    '"upper" AS "upper 95%", "articles"',
)
SENTIMENT_INDEX_BY_TOPIC = _columns(sentiment_series(GRAFANA, "topic"), '"time", metric, "index" AS value', "1, 2")
SENTIMENT_INDEX_BY_TICKER = _columns(sentiment_series(GRAFANA, "ticker"), '"time", metric, "index" AS value',
                                     "1, 2")
NEGATIVE_SHARE_BY_TOPIC = _columns(sentiment_series(GRAFANA, "topic"), '"time", metric, negative_share AS value',
                                   "1, 2")
ARTICLE_VOLUME = _columns(
    sentiment_series(GRAFANA),
    '"time", COALESCE(per_hour * articles / NULLIF(articles + copies, 0), 0) AS "novel per hour", '
    'COALESCE(per_hour * copies / NULLIF(articles + copies, 0), 0) AS "syndicated per hour"',
)
TOP_MOVERS = top_movers(GRAFANA)
MOST_NEGATIVE_HEADLINES = headlines(GRAFANA, "negative")
MOST_POSITIVE_HEADLINES = headlines(GRAFANA, "positive")
ALERTS_TABLE = alerts_table(GRAFANA)
MODEL_CHANGES = model_changes(GRAFANA)
ALERT_ANNOTATIONS = {severity: alert_annotations(severity) for severity in SEVERITIES}

MODEL_ANNOTATIONS = """\
SELECT
  extract(epoch FROM h.changed_at) * 1000 AS "time",
  'model ' || h.version || ' active (' || COALESCE(h.reason, 'no reason') || ', by '
    || COALESCE(h.changed_by, 'unknown') || ')' AS "text",
  'marketmood,model' AS "tags"
FROM model_alias_history h
WHERE h.alias = 'active' AND h.changed_at BETWEEN $__timeFrom()::timestamptz AND $__timeTo()::timestamptz
ORDER BY h.changed_at, h.id"""

TOPIC_VARIABLE = f"""\
SELECT DISTINCT s.topic
FROM current_scores({GRAFANA.t_from}, {GRAFANA.t_to}) s
ORDER BY 1"""

TICKER_VARIABLE = """\
SELECT DISTINCT t AS ticker
FROM articles a, unnest(a.tickers) AS t
WHERE $__timeFilter(a.event_time)
ORDER BY 1
LIMIT 1000"""

SOURCE_VARIABLE = """\
SELECT DISTINCT a.source
FROM articles a
WHERE $__timeFilter(a.event_time) AND a.source IS NOT NULL
ORDER BY 1
LIMIT 1000"""

# --- operators' panels ------------------------------------------------------------------------------------

ACTIVE_MODEL = """\
SELECT
  m.version AS "active model",
  m.updated_at AS "since",
  m.updated_by AS "by"
FROM model_aliases m
WHERE m.alias = 'active'"""

# Which versions wrote scores (all rows, shadow versions included: this is about the workers, not sentiment).
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

# Scores written per minute (throughput of the stream workers, as the database sees it). Fill 0: a minute in
# which nothing was scored is a 0 (a worker outage is a dip to zero, not a line across the gap).
SCORED_PER_MINUTE = """\
SELECT
  $__timeGroupAlias(scored_at, $__interval, 0),
  count(*) * 60000.0 / $__interval_ms AS "scored per minute"
FROM scores
WHERE $__timeFilter(scored_at)
GROUP BY 1
ORDER BY 1"""

# Ingest-to-score latency: from the Kafka record timestamp (when the record entered Kafka; the publish time
# where the worker did not record it) to the commit of the article's first score. Later scores by other
# model versions (backfills, shadows) are not latency.
SCORING_LATENCY = """\
WITH first AS (
  SELECT s.article_id, s.scored_at,
         extract(epoch FROM s.scored_at - COALESCE(a.kafka_timestamp, a.published_at)) AS latency_s
  FROM scores s
  JOIN articles a ON a.id = s.article_id
  WHERE $__timeFilter(s.scored_at)
    AND COALESCE(a.kafka_timestamp, a.published_at) IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM scores e WHERE e.article_id = s.article_id AND e.scored_at < s.scored_at)
)
SELECT
  $__timeGroupAlias(scored_at, $__interval),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s) AS "p50",
  percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_s) AS "p95"
FROM first
GROUP BY 1
ORDER BY 1"""

# Open = not resolved: firing, acknowledged and silenced, as `marketmood alerts list --state open` and
# `GET /alerts?state=open` count them.
OPEN_ALERTS = """\
SELECT count(*) AS "open alerts"
FROM alerts
WHERE state <> 'resolved'"""
