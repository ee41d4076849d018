"""Apply Alembic migrations programmatically: no ini file, the scripts ship inside the ``storage`` package.

``upgrade`` targets ``heads`` so revisions added later by other areas (chained or on their own branch)
are all applied. The target database is created first when missing, so a fresh server is one call away
from a usable schema.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from storage.db import create_database_if_missing, make_engine

SCRIPT_LOCATION = "storage:migrations"


def alembic_config() -> Config:
    """An in-memory Alembic config pointing at the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


# pg_advisory_xact_lock key of a migration run: "mmmigrate" folded to 63 bits, apart from the worker's keys.
MIGRATION_LOCK_KEY = 0x6D6D6D6967726174


def _run(url: str, action: str, revision: str) -> None:
    """One migration run in one transaction, under a transaction-scoped advisory lock: every command migrates at
    start, so two services starting together both read the same ``alembic_version`` and the second failed on
    "already exists"; now the second waits, then reads the first one's committed version and has nothing to do."""
    config = alembic_config()
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = conn
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "heads", *, create_database: bool = True) -> tuple[str, ...]:
    """Migrate the database at ``url`` up to ``revision``; returns the revisions it is at afterwards."""
    if create_database:
        create_database_if_missing(url)
    _run(url, "upgrade", revision)
    return current(url)


def downgrade(url: str, revision: str) -> tuple[str, ...]:
    """Migrate down to ``revision`` (``base`` removes everything); returns the revisions afterwards."""
    _run(url, "downgrade", revision)
    return current(url)


def current(url: str) -> tuple[str, ...]:
    """Revisions the database is at (empty when never migrated)."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    finally:
        engine.dispose()


def current_or_empty(url: str) -> tuple[str, ...]:
    """Like ``current`` but () when the database does not exist yet; unreachable servers still raise."""
    from sqlalchemy import exc as sa_exc

    from storage.db import DatabaseUnavailableError, ping, safe_url

    try:
        return current(url)
    except sa_exc.OperationalError as exc:
        if "does not exist" in str(exc.orig):
            return ()
        ping(url)  # raises DatabaseUnavailableError with a readable message
        raise DatabaseUnavailableError(f"cannot use PostgreSQL at {safe_url(url)}: {exc.orig}") from exc


def heads() -> tuple[str, ...]:
    """Head revisions shipped with this version of MarketMood."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def is_up_to_date(url: str) -> bool:
    return current(url) == heads()
