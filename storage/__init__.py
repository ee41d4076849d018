"""PostgreSQL storage: SQLAlchemy 2.x models, Alembic migrations and every SQL query MarketMood runs.

All SQL lives in this package. ``schema`` (tables), ``migrations`` + ``migrate`` (Alembic, applied with
``marketmood db upgrade``), ``db`` (engines, error classification), ``embedded`` (the embedded PostgreSQL
server; which database a process uses is decided by ``marketmood.runtime``); query modules per area:
``articles`` (the worker's batch write and summaries), ``progress`` (per-partition progress and the
event-time watermark), ``scores`` (the one "current score" definition), ``registry``, ``feedback``,
``alerts``, ``dashboards``, ``roles`` (Grafana's read-only role).
"""
