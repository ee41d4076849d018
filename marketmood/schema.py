"""Schema upkeep shared by `marketmood db upgrade` and every service that migrates at start-up: Alembic
migrations, then Grafana's read-only role from the settings (so a changed reader password takes effect on the
next upgrade that is given it; one that is not leaves an existing role's password and limits alone)."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from marketmood.logs import get_logger
from marketmood.settings import GrafanaSettings, Settings
from storage import migrate
from storage.db import make_engine
from storage.roles import ReaderLimits, ensure_reader_role


def reader_limits(grafana: GrafanaSettings) -> ReaderLimits:
    """The reader role's session limits, from the settings."""
    return ReaderLimits(statement_timeout_s=grafana.reader_statement_timeout_s,
                        connection_limit=grafana.reader_connection_limit)


def reader_password_given(grafana: GrafanaSettings) -> bool:
    """Whether this process was given the reader's password (environment, settings file), not its public dev
    default: `grafana push` refuses to send the default to Grafana's datasource."""
    return "reader_password" in grafana.model_fields_set


def reader_settings_given(grafana: GrafanaSettings) -> bool:
    """Whether this process was given the reader's password or limits (environment, settings file), not
    just their defaults. Every command that migrates applies the role; one started without them (a worker on
    another host, `alerts ack` from a bastion) reset the password to the public dev default and Grafana's
    dashboards lost their login. Such a process only creates a missing role and re-grants its privileges."""
    return reader_password_given(grafana) or bool(
        grafana.model_fields_set & {"reader_statement_timeout_s", "reader_connection_limit"})


def apply_reader_role(settings: Settings, url: str, *, strict: bool = True) -> None:
    """Create or update Grafana's read-only role in the database at ``url`` (idempotent; after migrating).

    ``strict=False`` (services migrating at start-up) logs a warning instead of failing when the database
    user may not manage roles: a worker must not refuse to start over Grafana's login.
    """
    grafana = settings.grafana
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            ensure_reader_role(conn, grafana.reader_role, grafana.reader_password, reader_limits(grafana),
                               update_existing=reader_settings_given(grafana))
    except sa_exc.ProgrammingError as exc:
        if strict or getattr(exc.orig, "pgcode", None) != "42501":
            raise
        get_logger(__name__).warning("cannot manage Grafana's reader role: run `marketmood db upgrade` as a "
                                     "role with CREATEROLE", role=grafana.reader_role, error=str(exc.orig).strip())
    finally:
        engine.dispose()


def upgrade_database(settings: Settings, url: str, revision: str = "heads", *,
                     strict: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Migrate ``url`` to ``revision`` and apply the reader role; (revisions before, revisions after)."""
    before = migrate.current_or_empty(url)
    after = migrate.upgrade(url, revision)
    apply_reader_role(settings, url, strict=strict)
    return before, after
