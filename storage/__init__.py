"""PostgreSQL storage: SQLAlchemy 2.x models, Alembic migrations and every SQL query MarketMood runs.

All SQL lives in this package. ``schema`` (tables), ``migrations`` + ``migrate`` (Alembic, applied with
``marketmood db upgrade``), ``db`` (engines, retry classification), ``embedded`` (the embedded PostgreSQL
default) and ``service.open_database`` (configured URL or embedded server); query modules per area:
``articles`` (the worker's batch upsert and summaries), ``registry``, ``feedback``, ``alerts``,
``dashboards``.
"""
