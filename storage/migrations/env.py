"""Alembic environment: runs on a connection handed in by ``storage.migrate``, or, for developers running the
alembic CLI (``alembic -c storage/alembic.ini -x url=postgresql+psycopg2://... revision --autogenerate``), on
the URL given with ``-x url=`` (else ``sqlalchemy.url``), through the one engine builder and the same
migration lock as ``storage.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from storage.db import make_engine
from storage.schema import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, compare_server_default=True, **kwargs)


def _cli_url() -> str | None:
    """``-x url=...`` of the alembic command line (what alembic.ini tells developers to pass), else the ini's
    ``sqlalchemy.url``. The -x argument was read by nobody: the documented command failed with "set sqlalchemy.url"."""
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")


def run_offline() -> None:
    """``alembic upgrade --sql``: emit SQL for a DBA instead of running it."""
    _configure(url=_cli_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = _cli_url()
    if not url:
        raise RuntimeError("no database: pass -x url=postgresql+psycopg2://... (or use marketmood db upgrade)")
    from storage.migrate import MIGRATION_LOCK_KEY  # not at the top: storage.migrate loads this module's scripts

    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
