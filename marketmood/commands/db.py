"""``marketmood db upgrade`` / ``marketmood db current``: manage the schema of the configured database.

With MARKETMOOD_DATABASE_URL unset they act on the embedded PostgreSQL under ``<home>/postgres``. After the
migrations, ``upgrade`` applies Grafana's read-only role from the settings (``marketmood.schema.apply_reader_role``), so a
reader password changed in the settings takes effect on the next upgrade.
"""

from __future__ import annotations

from pathlib import Path

import click
from alembic.util import CommandError as AlembicCommandError
from sqlalchemy import exc as sa_exc

from marketmood.runtime import open_database
from marketmood.schema import upgrade_database
from marketmood.settings import Settings, load_settings
from storage import migrate
from storage.db import DatabaseUnavailableError, normalize_database_url, ping, safe_url
from storage.embedded import EmbeddedPostgresError


def _target(url: str | None) -> tuple[str | None, Path, Settings]:
    """The explicit --url, else MARKETMOOD_DATABASE_URL, else None (embedded); plus home and the settings."""
    settings = load_settings()
    if url:
        try:
            url = normalize_database_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None
    return (url or settings.database_url), settings.home, settings


@click.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations shipped with MarketMood)."""


@db_group.command("upgrade")
@click.option("--url", help="SQLAlchemy URL [default: MARKETMOOD_DATABASE_URL, else the embedded database].")
@click.option("--revision", default="heads", show_default=True,
              help="Target revision (an Alembic revision id, or heads for the newest).")
def upgrade_command(url: str | None, revision: str) -> None:
    """Create the database if missing, apply migrations up to REVISION, then create or update Grafana's
    read-only role (MARKETMOOD_GRAFANA__READER_ROLE / __READER_PASSWORD): re-run it after changing them."""

    database_url, home, settings = _target(url)
    try:
        with open_database(database_url, home, upgrade_schema=False) as target:
            before, after = upgrade_database(settings, target, revision)
    except (DatabaseUnavailableError, EmbeddedPostgresError) as exc:
        raise click.ClickException(str(exc)) from None
    except sa_exc.DBAPIError as exc:
        first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
        raise click.ClickException(f"upgrade of {safe_url(target)} failed: {first}") from None
    except AlembicCommandError as exc:  # e.g. --revision that names no migration
        raise click.BadParameter(str(exc), param_hint="--revision") from None
    label = "embedded database" if database_url is None else safe_url(target)
    if before == after:
        click.echo(f"{label}: already at {', '.join(after) or 'base'}")
    else:
        click.echo(f"{label}: upgraded {', '.join(before) or 'base'} -> {', '.join(after)}")


@db_group.command("current")
@click.option("--url", help="SQLAlchemy URL [default: MARKETMOOD_DATABASE_URL, else the embedded database].")
def current_command(url: str | None) -> None:
    """Show the database's revision(s) and whether it is up to date."""

    database_url, home, _settings = _target(url)
    try:
        with open_database(database_url, home, upgrade_schema=False) as target:
            ping(target)
            revisions = migrate.current_or_empty(target)
    except (DatabaseUnavailableError, EmbeddedPostgresError) as exc:
        raise click.ClickException(str(exc)) from None
    heads = migrate.heads()
    state = "up to date" if revisions == heads else f"behind: heads are {', '.join(heads)}"
    click.echo(f"{', '.join(revisions) or 'base (no migrations applied)'} ({state})")


COMMANDS = [db_group]
