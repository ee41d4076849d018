"""Read-only role for Grafana's PostgreSQL datasource.

Grafana runs analyst-written SQL; logging it in as the application's owner would let a dashboard (or anyone
with editor rights) change or drop data. This role can only SELECT: on every table now, and, through default
privileges, on tables later migrations create. Its sessions also default to read-only transactions.

Role name and password come from settings: ``MARKETMOOD_GRAFANA__READER_ROLE`` (default ``marketmood_grafana``)
and ``MARKETMOOD_GRAFANA__READER_PASSWORD`` (dev default ``marketmood-grafana-dev``: set a real one in
production). Roles are cluster-wide, so the role is created if missing and its password reset otherwise;
privileges are per database.

Revision ID: 0002_grafana_reader
Revises: 0001_initial
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from marketmood.settings import load_settings

revision: str = "0002_grafana_reader"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on: only quotes need doubling), with colons
    escaped for SQLAlchemy's ``text()`` so ``:word`` in a password is not taken for a bind parameter."""
    return "'" + value.replace("'", "''").replace(":", "\\:") + "'"


def upgrade() -> None:
    grafana = load_settings().grafana
    role, password = grafana.reader_role, _literal(grafana.reader_password)  # role name is pattern-checked
    op.execute(
        f"""
        DO $$
        BEGIN
          IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            ALTER ROLE "{role}" WITH LOGIN PASSWORD {password};
          ELSE
            BEGIN
              CREATE ROLE "{role}" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {password};
            EXCEPTION WHEN duplicate_object THEN
              ALTER ROLE "{role}" WITH LOGIN PASSWORD {password};  -- created concurrently
            END;
          END IF;
        END
        $$;
        """
    )
    op.execute(f"ALTER ROLE \"{role}\" SET default_transaction_read_only = on")
    op.execute(f"DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO \"{role}\"', current_database()); END $$;")
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
    op.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{role}"')


def downgrade() -> None:
    role = load_settings().grafana.reader_role
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM "{role}"')
    op.execute(f'REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM "{role}"')
    op.execute(f'REVOKE USAGE ON SCHEMA public FROM "{role}"')
    op.execute(
        f"DO $$ BEGIN EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM \"{role}\"', current_database()); END $$;"
    )
    # The role may still hold privileges in another database of the cluster: then it stays.
    op.execute(
        f"""
        DO $$
        BEGIN
          DROP ROLE IF EXISTS "{role}";
        EXCEPTION WHEN dependent_objects_still_exist THEN
          RAISE NOTICE 'role {role} still used by another database; kept';
        END
        $$;
        """
    )
