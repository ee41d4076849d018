"""``marketmood db upgrade|current`` against a real database, the embedded default, and a dead server."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from marketmood.cli import cli
from marketmood.schema import apply_reader_role
from marketmood.settings import load_settings
from storage import migrate
from storage.db import make_engine
from storage.embedded import postmaster_running, stop_server
from storage.roles import drop_reader_role
from tests.fixtures.postgres import copy_data_dir, fresh_data_dir, remove_data_dir


def test_upgrade_and_current_on_a_configured_database(db_url: str) -> None:
    migrate.downgrade(db_url, "base")
    runner = CliRunner()
    env = {"MARKETMOOD_DATABASE_URL": db_url}
    behind = runner.invoke(cli, ["db", "current"], env=env)
    assert behind.exit_code == 0, behind.output
    assert "base (no migrations applied)" in behind.output and "behind" in behind.output

    first = runner.invoke(cli, ["db", "upgrade"], env=env)
    assert first.exit_code == 0, first.output
    assert f"upgraded base -> {', '.join(migrate.heads())}" in first.output
    assert migrate.current(db_url) == migrate.heads()

    again = runner.invoke(cli, ["db", "upgrade", "--url", db_url])
    assert again.exit_code == 0 and "already at" in again.output
    current = runner.invoke(cli, ["db", "current"], env=env)
    assert "(up to date)" in current.output


def test_unreachable_database_is_a_clear_error() -> None:
    url = "postgresql+psycopg2://postgres@/marketmood?host=/nonexistent-socket-dir"
    for command in (["db", "upgrade", "--url", url], ["db", "current", "--url", url]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1
        assert "cannot reach PostgreSQL" in result.output and "nonexistent-socket-dir" in result.output
        assert "Traceback" not in result.output


def test_embedded_default_is_migrated_and_stopped(pristine_pgdata: Path) -> None:
    """No URL configured: the embedded server under <home>/postgres is started, migrated, then stopped.

    The data dir is a copy of the session's pristine one (initdb itself is covered by the fixtures).
    """
    data_dir = fresh_data_dir()
    home = data_dir.parent / "home"
    copy_data_dir(pristine_pgdata, home / "postgres")
    try:
        result = CliRunner().invoke(cli, ["db", "upgrade"], env={"MARKETMOOD_HOME": str(home), "MARKETMOOD_DATABASE_URL": ""})
        assert result.exit_code == 0, result.output
        assert "embedded database: upgraded base ->" in result.output
        assert (home / "postgres" / "PG_VERSION").exists()
        assert postmaster_running(home / "postgres") is None, "the command stops the server it started"
    finally:
        stop_server(Path(home) / "postgres")
        remove_data_dir(data_dir)


def test_upgrade_applies_the_reader_password_from_the_settings_every_time(db_url: str) -> None:
    """Rotating MARKETMOOD_GRAFANA__READER_PASSWORD takes effect on the next `db upgrade` (no new migration)."""
    role = "mm_db_upgrade_reader"
    engine = make_engine(db_url, poolclass=NullPool)

    def upgrade_with(password: str) -> tuple[str, int]:
        env = {"MARKETMOOD_DATABASE_URL": db_url, "MARKETMOOD_GRAFANA__READER_ROLE": role,
               "MARKETMOOD_GRAFANA__READER_PASSWORD": password, "MARKETMOOD_GRAFANA__READER_CONNECTION_LIMIT": "7"}
        result = CliRunner().invoke(cli, ["db", "upgrade"], env=env)
        assert result.exit_code == 0, result.output
        assert "already at" in result.output  # schema unchanged: only the role was updated
        with engine.connect() as conn:
            row = conn.execute(text("SELECT rolpassword, rolconnlimit FROM pg_authid WHERE rolname = :r"),
                               {"r": role}).one()
        return row.rolpassword, row.rolconnlimit

    try:
        first, limit = upgrade_with("first-password")
        second, _ = upgrade_with("rotated-password")
        assert first and second and first != second and limit == 7
    finally:
        with engine.begin() as conn:
            drop_reader_role(conn, role)
        engine.dispose()


def test_services_start_even_when_the_database_user_cannot_manage_roles(db_url: str) -> None:
    """Services call apply_reader_role(strict=False): a user without CREATEROLE gets a warning, not a crash;
    `marketmood db upgrade` (strict) reports the refusal."""
    owner = make_engine(db_url, poolclass=NullPool)
    with owner.begin() as conn:
        conn.execute(text("DROP ROLE IF EXISTS mm_plain_app"))
        conn.execute(text("CREATE ROLE mm_plain_app LOGIN NOSUPERUSER NOCREATEROLE PASSWORD 'x'"))
    plain = make_url(db_url).set(username="mm_plain_app", password="x").render_as_string(hide_password=False)
    settings = load_settings(grafana={"reader_role": "mm_never_created"})
    try:
        apply_reader_role(settings, plain, strict=False)  # no exception
        with pytest.raises(exc.ProgrammingError):
            apply_reader_role(settings, plain)
        with owner.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = 'mm_never_created'")).scalar() == 0
    finally:
        with owner.begin() as conn:
            conn.execute(text("DROP OWNED BY mm_plain_app"))
            conn.execute(text("DROP ROLE mm_plain_app"))
        owner.dispose()


def test_a_command_not_given_the_reader_password_leaves_grafanas_login_alone(db_url: str) -> None:
    """Every command that migrates applies Grafana's reader role. Before, one started without
    MARKETMOOD_GRAFANA__READER_PASSWORD (a worker on another host, `alerts list` from a bastion) set the role's
    password back to the public dev default and its limits to the defaults: the dashboards lost their login."""
    from marketmood.settings import get_settings

    role = "mm_reader_rotate_test"
    owner = make_engine(db_url, poolclass=NullPool)

    def state() -> tuple[str, int]:
        with owner.connect() as conn:
            return tuple(conn.execute(text("SELECT a.rolpassword, r.rolconnlimit FROM pg_authid a JOIN pg_roles r "
                                           "USING (rolname) WHERE rolname = :r"), {"r": role}).one())

    runner = CliRunner()
    base = {"MARKETMOOD_DATABASE_URL": db_url, "MARKETMOOD_GRAFANA__READER_ROLE": role}
    try:
        get_settings.cache_clear()
        first = runner.invoke(cli, ["db", "upgrade"], env={**base, "MARKETMOOD_GRAFANA__READER_PASSWORD": "rotated-1",
                                                           "MARKETMOOD_GRAFANA__READER_CONNECTION_LIMIT": "7"})
        assert first.exit_code == 0, first.output
        rotated = state()
        assert rotated[1] == 7
        get_settings.cache_clear()
        listed = runner.invoke(cli, ["alerts", "list"], env=base)  # no password, no limit given
        assert listed.exit_code == 0, listed.output
        assert state() == rotated
        get_settings.cache_clear()
        again = runner.invoke(cli, ["db", "upgrade"], env={**base, "MARKETMOOD_GRAFANA__READER_PASSWORD": "rotated-2"})
        assert again.exit_code == 0 and state()[0] != rotated[0]  # given explicitly: applied
    finally:
        get_settings.cache_clear()
        with owner.begin() as conn:
            drop_reader_role(conn, role)
        owner.dispose()


def test_a_revision_that_names_no_migration_is_a_usage_error(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade", "--url", db_url, "--revision", "bogus"])
    assert result.exit_code == 2 and "--revision" in result.output and "bogus" in result.output, result.output
    assert "Traceback" not in result.output
