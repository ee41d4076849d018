"""The read-only PostgreSQL role Grafana logs in as, and who may call the advisory-lock functions.

Grafana runs analyst-written SQL, so its role must not be able to hurt the pipeline: it can SELECT only
what the dashboards read (never model blobs, never analysts' feedback), its statements are cancelled after
a bounded time, its sessions are read-only and idle transactions are closed, it holds few connections, and
it cannot call ``pg_advisory_lock`` & friends (the worker serialises story-key buckets with advisory
locks: a reader holding them would stall every batch).

Role and password are deployment settings, not schema, so :func:`ensure_reader_role` is called by
MarketMood (``marketmood db upgrade`` and services) after every migration run instead of once by a
migration: a password changed later in the settings takes effect on the next upgrade. It is idempotent
and runs in the caller's transaction. Revoking the advisory-lock functions from PUBLIC (per database) is
done once by migration ``0007_reader_role`` with :func:`restrict_advisory_locks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, text

log = structlog.get_logger(__name__)

# Tables the dashboards read, whole. Tables missing at the current revision are skipped.
READER_TABLES: tuple[str, ...] = (
    "articles",
    "scores",
    "alerts",
    "silences",
    "model_aliases",
    "model_alias_history",
    "ingest_progress",
)
# Tables the dashboards read in part: every column except the listed ones (``current_scores()`` joins
# model_versions for version and status; the artifact is the model itself and is not for Grafana).
READER_TABLES_EXCEPT_COLUMNS: dict[str, tuple[str, ...]] = {"model_versions": ("artifact",)}
# Functions the dashboards call (EXECUTE is PUBLIC's by default; granted explicitly so revoking PUBLIC
# later keeps the reader working). Missing ones are skipped.
READER_FUNCTIONS: tuple[str, ...] = (
    "current_scores(timestamptz, timestamptz)",
    # migration 0006_dashboards: the panels' smoothing aggregate and link helper
    "ema_step(double precision, double precision, double precision)",
    "ema(double precision, double precision)",
    "url_encode(text)",
)

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Serialises concurrent ensure_reader_role calls (several services starting at once): concurrent GRANTs on
# one object can fail with "tuple concurrently updated".
_ROLE_LOCK_KEY = 0x4D4D_0052  # "MM" "R"


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """Session limits set on the role (defaults of every session it opens)."""

    statement_timeout_s: float = 30.0
    lock_timeout_s: float = 5.0
    idle_in_transaction_timeout_s: float = 60.0
    connection_limit: int = 20


def _ident(conn: Connection, name: str) -> str:
    if not _ROLE_NAME.match(name):
        raise ValueError(f"invalid role name {name!r}: lowercase letters, digits and _ only")
    return conn.dialect.identifier_preparer.quote(name)


def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on: only quotes need doubling), with colons
    escaped for ``text()`` so ``:word`` in a password is not taken for a bind parameter."""
    return "'" + value.replace("'", "''").replace(":", "\\:") + "'"


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def ensure_reader_role(conn: Connection, role: str, password: str, limits: ReaderLimits = ReaderLimits(), *,
                       update_existing: bool = True) -> None:
    """Create or update ``role``: login with ``password``, read-only, bounded, SELECT on the dashboard tables only.

    Privileges are reset each call (everything in schema public revoked, then the allow-list granted), so
    a table outside :data:`READER_TABLES` is never readable, whatever an older migration granted.
    ``update_existing=False`` leaves an existing role's password and session limits as they are (a process
    that was not given them must not reset them to the defaults).
    """
    if not password:
        raise ValueError("the reader role needs a non-empty password")
    quoted, secret = _ident(conn, role), _literal(password)
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ROLE_LOCK_KEY})
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    options = f"LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT {int(limits.connection_limit)}"
    if exists and not update_existing:
        conn.execute(text(f"ALTER ROLE {quoted} WITH NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"))
    elif exists:
        conn.execute(text(f"ALTER ROLE {quoted} WITH {options} PASSWORD {secret}"))
    else:
        conn.execute(text(f"CREATE ROLE {quoted} WITH {options} PASSWORD {secret}"))
    session = [("default_transaction_read_only", "on")]  # read-only and no privileges beyond: always enforced
    if update_existing or not exists:
        session += [
            ("statement_timeout", str(_ms(limits.statement_timeout_s))),
            ("lock_timeout", str(_ms(limits.lock_timeout_s))),
            ("idle_in_transaction_session_timeout", str(_ms(limits.idle_in_transaction_timeout_s))),
        ]
    for setting, value in session:
        conn.execute(text(f"ALTER ROLE {quoted} SET {setting} = {_literal(value)}"))

    database = conn.dialect.identifier_preparer.quote(conn.execute(text("SELECT current_database()")).scalar_one())
    conn.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {quoted}"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    # Migration 0002 once granted SELECT on every future table: take that back, then grant the allow-list.
    conn.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {quoted}"))
    conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}"))
    conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted}"))
    for table in READER_TABLES:
        if _exists(conn, table):
            conn.execute(text(f"GRANT SELECT ON public.{table} TO {quoted}"))
    for table, hidden in READER_TABLES_EXCEPT_COLUMNS.items():
        if not _exists(conn, table):
            continue
        columns = [c for c in _columns(conn, table) if c not in hidden]
        conn.execute(text(f"REVOKE ALL ({', '.join(hidden)}) ON public.{table} FROM {quoted}"))
        conn.execute(text(f"GRANT SELECT ({', '.join(columns)}) ON public.{table} TO {quoted}"))
    for function in READER_FUNCTIONS:
        if conn.execute(text("SELECT to_regprocedure(:f)"), {"f": f"public.{function}"}).scalar() is not None:
            conn.execute(text(f"GRANT EXECUTE ON FUNCTION public.{function} TO {quoted}"))
    # Migration 0007 revokes them once; run by a non-superuser it changed nothing and is never run again, so the
    # revoke is retried here, after every upgrade: a later `db upgrade` as a superuser closes the hole.
    if can_take_advisory_locks(conn, role) and not restrict_advisory_locks(conn):
        log.warning("reader role can still take advisory locks (and stall the worker's story-key locks): run "
                    "`marketmood db upgrade` once as a superuser, which revokes them from PUBLIC; a managed "
                    "PostgreSQL without one cannot revoke them", role=role)


def _exists(conn: Connection, table: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:t)"), {"t": f"public.{table}"}).scalar() is not None


def _columns(conn: Connection, table: str) -> list[str]:
    return list(
        conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position"
            ),
            {"t": table},
        ).scalars()
    )


# Every advisory-lock function of pg_catalog (pg_advisory_lock, _xact_, _try_, _shared, _unlock, ...).
_ADVISORY_FUNCTIONS = (
    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = 'pg_catalog' AND p.proname LIKE 'pg\\_%advisory\\_%' ORDER BY 1"
)


def advisory_lock_functions(conn: Connection) -> list[str]:
    """Signatures of PostgreSQL's advisory-lock functions, e.g. ``pg_advisory_xact_lock(integer,integer)``."""
    return list(conn.execute(text(_ADVISORY_FUNCTIONS)).scalars())


def restrict_advisory_locks(conn: Connection) -> bool:
    """Revoke EXECUTE on the advisory-lock functions from PUBLIC in this database; grant it to the roles the
    application runs as (the migrating role, the database owner, the owner of schema public).

    Needs the functions' owner (a superuser): otherwise nothing changes, a warning is logged and False returned.
    """
    superuser = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar_one()
    if not superuser:
        log.warning("not a superuser: advisory-lock functions stay executable by every role (PUBLIC)")
        return False
    grantees = conn.execute(
        text(
            "SELECT DISTINCT quote_ident(r) FROM (VALUES (current_user::text),"
            " ((SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())::text),"
            " ((SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public')::text)) AS v(r)"
        )
    ).scalars().all()
    for function in advisory_lock_functions(conn):
        conn.execute(text(f"REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC"))
        conn.execute(text(f"GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO {', '.join(grantees)}"))
    return True


def grant_advisory_locks(conn: Connection, role: str) -> None:
    """Let another application role (not Grafana's) take advisory locks, e.g. a worker role of its own."""
    quoted = _ident(conn, role)
    for function in advisory_lock_functions(conn):
        conn.execute(text(f"GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO {quoted}"))


def unrestrict_advisory_locks(conn: Connection) -> None:
    """Undo :func:`restrict_advisory_locks` (PostgreSQL's default: PUBLIC may call them)."""
    for function in advisory_lock_functions(conn):
        conn.execute(text(f"GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO PUBLIC"))


def can_take_advisory_locks(conn: Connection, role: str) -> bool:
    """True if ``role`` may execute any advisory-lock function (what the reader must not)."""
    return bool(
        conn.execute(
            text("SELECT bool_or(has_function_privilege(:r, f, 'EXECUTE')) FROM unnest(CAST(:fs AS text[])) AS f"),
            {"r": role, "fs": [f"pg_catalog.{f}" for f in advisory_lock_functions(conn)]},
        ).scalar()
    )


def drop_reader_role(conn: Connection, role: str) -> None:
    """Remove the role's privileges in this database, then the role if no other database still uses it."""
    quoted = _ident(conn, role)
    if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is None:
        return
    database = conn.dialect.identifier_preparer.quote(conn.execute(text("SELECT current_database()")).scalar_one())
    conn.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {quoted}"))
    conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}"))
    conn.execute(text(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {quoted}"))
    conn.execute(text(f"REVOKE USAGE ON SCHEMA public FROM {quoted}"))
    conn.execute(text(f"REVOKE CONNECT ON DATABASE {database} FROM {quoted}"))
    conn.execute(
        text(
            f"DO $$ BEGIN DROP ROLE IF EXISTS {quoted}; EXCEPTION WHEN dependent_objects_still_exist THEN"
            f" RAISE NOTICE 'role {role} still used by another database; kept'; END $$"
        )
    )
