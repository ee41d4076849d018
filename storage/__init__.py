"""PostgreSQL storage: SQLAlchemy 2.x models, Alembic migrations and every SQL query MarketMood runs.

All SQL lives in this package; other packages call the functions in ``storage.queries_*`` modules.
"""
