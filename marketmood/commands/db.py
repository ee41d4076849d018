"""``marketmood db upgrade`` / ``marketmood db current``: manage the schema of the configured database.

With MARKETMOOD_DATABASE_URL unset they act on the embedded PostgreSQL under ``<home>/postgres``.
"""

from __future__ import annotations

from pathlib import Path

import click

from marketmood.settings import load_settings


def _target(url: str | None) -> tuple[str | None, Path]:
    """The explicit --url, else MARKETMOOD_DATABASE_URL, else None (embedded); plus MarketMood's home."""
    settings = load_settings()
    return (url or settings.database_url), settings.home


@click.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations shipped with MarketMood)."""


@db_group.command("upgrade")
@click.option("--url", help="SQLAlchemy URL [default: MARKETMOOD_DATABASE_URL, else the embedded database].")
@click.option("--revision", default="heads", show_default=True, help="Target revision.")
def upgrade_command(url: str | None, revision: str) -> None:
    """Create the database if missing and apply migrations up to REVISION."""
    from storage import migrate
    from storage.db import DatabaseUnavailableError, safe_url
    from storage.embedded import EmbeddedPostgresError
    from storage.service import open_database

    database_url, home = _target(url)
    try:
        with open_database(database_url, home, upgrade=False) as target:
            before = migrate.current_or_empty(target)
            after = migrate.upgrade(target, revision)
    except (DatabaseUnavailableError, EmbeddedPostgresError) as exc:
        raise click.ClickException(str(exc)) from None
    label = "embedded database" if database_url is None else safe_url(target)
    if before == after:
        click.echo(f"{label}: already at {', '.join(after) or 'base'}")
    else:
        click.echo(f"{label}: upgraded {', '.join(before) or 'base'} -> {', '.join(after)}")


@db_group.command("current")
@click.option("--url", help="SQLAlchemy URL [default: MARKETMOOD_DATABASE_URL, else the embedded database].")
def current_command(url: str | None) -> None:
    """Show the database's revision(s) and whether it is up to date."""
    from storage import migrate
    from storage.db import DatabaseUnavailableError, ping
    from storage.embedded import EmbeddedPostgresError
    from storage.service import open_database

    database_url, home = _target(url)
    try:
        with open_database(database_url, home, upgrade=False) as target:
            ping(target)
            revisions = migrate.current_or_empty(target)
    except (DatabaseUnavailableError, EmbeddedPostgresError) as exc:
        raise click.ClickException(str(exc)) from None
    heads = migrate.heads()
    state = "up to date" if revisions == heads else f"behind: heads are {', '.join(heads)}"
    click.echo(f"{', '.join(revisions) or 'base (no migrations applied)'} ({state})")


COMMANDS = [db_group]
