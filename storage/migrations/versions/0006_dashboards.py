"""SQL helpers the analyst panels need and PostgreSQL lacks: an EMA aggregate and URL encoding.

* ``ema(value, alpha)``: exponential moving average as an aggregate, so a window clause
  ``ema(x, 0.3) OVER (PARTITION BY series ORDER BY time)`` smooths a series in one pass. NULL inputs (a
  bucket with too few articles) carry the previous average forward instead of resetting it; the first
  non-NULL input starts the average.
* ``url_encode(text)``: RFC 3986 percent-encoding (UTF-8), for the news-search link of a headline whose
  source gave no URL.

Both are plain SQL functions: executable by Grafana's read-only role (PUBLIC has EXECUTE by default).

Revision ID: 0006_dashboards
Revises: 0005_alerts
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_dashboards"
down_revision: str | Sequence[str] | None = "0005_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION ema_step(state double precision, x double precision, alpha double precision)
        RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
          SELECT CASE WHEN x IS NULL THEN state
                      WHEN state IS NULL THEN x
                      ELSE alpha * x + (1 - alpha) * state END
        $$
        """
    )
    op.execute("CREATE AGGREGATE ema(double precision, double precision) (SFUNC = ema_step, STYPE = double precision)")
    op.execute(
        r"""
        CREATE OR REPLACE FUNCTION url_encode(value text)
        RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
          SELECT COALESCE(string_agg(
                   CASE WHEN ch ~ '^[A-Za-z0-9._~-]$' THEN ch
                        ELSE regexp_replace(upper(encode(convert_to(ch, 'UTF8'), 'hex')), '(..)', '%\1', 'g')
                   END, '' ORDER BY pos), '')
          FROM regexp_split_to_table(value, '') WITH ORDINALITY AS c(ch, pos)
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS url_encode(text)")
    op.execute("DROP AGGREGATE IF EXISTS ema(double precision, double precision)")
    op.execute("DROP FUNCTION IF EXISTS ema_step(double precision, double precision, double precision)")
