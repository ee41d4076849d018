"""Pipeline progress and the one definition of an article's current score.

* ``ingest_progress``: per (topic, partition) what the workers have committed: the next offset, the largest
  event time committed, and the partition's log end seen at that commit. Written in the same transaction
  as the batch, so it never runs ahead of the rows. Alerts judge a window only once this event-time
  watermark has passed it (see ``storage.progress``).
* ``current_scores(from, to)``: for every article with ``event_time`` in ``[from, to)``, the score that
  counts: the active model's when it scored the article, otherwise the newest score of a version that was
  ever in service (unregistered versions such as the bundled model count; candidates, shadow versions and
  rejected versions never do). Alerts, dashboards, the demo and the read API all select from it, so they
  cannot disagree about an article. It is a set-returning SQL function (inlined by the planner), so the
  time bounds reach the ``scores.event_time`` index.
* ``articles.kafka_timestamp``: the Kafka record timestamp (producer or broker time), so ingest-to-score
  latency is measured from when the record entered Kafka, not from the worker's own clock.
* ``articles.content_sha256``: fingerprint of an article's content, so a second copy of an id with
  different content is recognised (first write wins; the worker dead-letters the copy as
  ``conflicting_duplicate``, counts it in a metric and logs it; never silently merged).

Revision ID: 0003_pipeline
Revises: 0002_grafana_reader
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_pipeline"
down_revision: str | Sequence[str] | None = "0002_grafana_reader"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_SCORES_SQL = """
CREATE OR REPLACE FUNCTION current_scores(t_from timestamptz, t_to timestamptz)
RETURNS TABLE (
  article_id text, model_version text, topic text, topic_confidence double precision, sentiment text,
  p_negative double precision, p_neutral double precision, p_positive double precision,
  score double precision, event_time timestamptz, scored_at timestamptz
)
LANGUAGE sql STABLE AS $$
  SELECT DISTINCT ON (s.article_id)
         s.article_id, s.model_version, s.topic, s.topic_confidence, s.sentiment,
         s.p_negative, s.p_neutral, s.p_positive, s.score, s.event_time, s.scored_at
  FROM scores s
  LEFT JOIN model_versions mv ON mv.version = s.model_version
  LEFT JOIN model_aliases act ON act.alias = 'active'
  WHERE s.event_time >= t_from AND s.event_time < t_to
    AND (mv.version IS NULL OR mv.status IN ('promoted', 'retired') OR s.model_version = act.version)
  ORDER BY s.article_id, (s.model_version = act.version) DESC NULLS LAST, s.scored_at DESC, s.model_version DESC
$$
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ingest_progress (
          topic text NOT NULL,
          partition integer NOT NULL,
          next_offset bigint NOT NULL,
          log_end_offset bigint,
          max_event_time timestamptz,
          updated_at timestamptz NOT NULL DEFAULT now(),
          CONSTRAINT pk_ingest_progress PRIMARY KEY (topic, partition)
        )
        """
    )
    op.execute("ALTER TABLE articles ADD COLUMN kafka_timestamp timestamptz")
    op.execute("ALTER TABLE articles ADD COLUMN content_sha256 text")
    op.execute(CURRENT_SCORES_SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS current_scores(timestamptz, timestamptz)")
    op.execute("ALTER TABLE articles DROP COLUMN IF EXISTS content_sha256")
    op.execute("ALTER TABLE articles DROP COLUMN IF EXISTS kafka_timestamp")
    op.execute("DROP TABLE IF EXISTS ingest_progress")
