"""Grafana's read-only role (``storage.roles``): reads what dashboards read, nothing else, and cannot stall the worker.

Each test manages a role of its own (roles are cluster-wide; the default ``marketmood_grafana`` is shared
with the dashboard tests), on a fresh database migrated to heads (so migration 0007_reader_role has revoked
the advisory-lock functions from PUBLIC).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from sqlalchemy import Engine, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from storage.articles import ScoredArticle, upsert_scored_batch
from storage.db import make_engine
from storage.roles import (
    ReaderLimits,
    advisory_lock_functions,
    can_take_advisory_locks,
    drop_reader_role,
    ensure_reader_role,
    grant_advisory_locks,
    restrict_advisory_locks,
    unrestrict_advisory_locks,
)

_names = itertools.count()
WORKER_LOCK_NAMESPACE = 0x4D4D  # the namespace storage.articles locks story-key buckets in


@pytest.fixture
def owner(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def reader(owner: Engine, db_url: str) -> Iterator[tuple[str, Engine]]:
    """A reader role with a 1 s statement timeout, and an engine logged in as it."""
    role = f"mm_reader_test_{next(_names)}"
    with owner.begin() as conn:
        ensure_reader_role(conn, role, "pw:with'quote", ReaderLimits(statement_timeout_s=1.0))
    engine = make_engine(make_url(db_url).set(username=role, password="pw:with'quote")
                         .render_as_string(hide_password=False), poolclass=NullPool)
    yield role, engine
    engine.dispose()
    with owner.begin() as conn:
        drop_reader_role(conn, role)


def _pgcode(statement: str, engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            conn.execute(text(statement))
        except exc.DBAPIError as failure:
            return failure.orig.pgcode  # type: ignore[union-attr]
    return None


def test_reader_selects_what_dashboards_read_and_nothing_else(owner: Engine, reader: tuple[str, Engine]) -> None:
    role, engine = reader
    with owner.begin() as conn:
        conn.execute(text("CREATE TABLE later_table (x int)"))  # as a future migration would
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one() == role
        for table in ("articles", "scores", "alerts", "model_aliases", "model_alias_history", "ingest_progress"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table
        assert conn.execute(text("SELECT count(*) FROM current_scores(now() - interval '1 day', now())")).scalar_one() == 0
        assert conn.execute(text("SELECT count(version) FROM model_versions")).scalar_one() == 0
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "1s"
        assert conn.execute(text("SHOW default_transaction_read_only")).scalar_one() == "on"
        assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1min"
    for statement in (
        "SELECT artifact FROM model_versions",  # model blobs
        "SELECT * FROM model_versions",
        "SELECT * FROM feedback",  # analysts' corrections
        "SELECT * FROM notification_outbox",
        "SELECT x FROM later_table",  # no default privileges on tables added later
        "INSERT INTO alerts (rule) VALUES ('x')",
        "DELETE FROM articles",
        "DROP TABLE later_table",
    ):
        assert _pgcode(statement, engine) in {"42501", "25006"}, statement  # insufficient privilege / read-only


def test_password_and_limits_follow_the_settings_on_every_call(owner: Engine, reader: tuple[str, Engine]) -> None:
    role, _engine = reader

    def secret() -> str:
        with owner.connect() as conn:
            return conn.execute(text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}).scalar_one()

    before = secret()
    with owner.begin() as conn:
        ensure_reader_role(conn, role, "rotated", ReaderLimits(statement_timeout_s=2.5, connection_limit=3))
        limit = conn.execute(text("SELECT rolconnlimit FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar_one()
    assert secret() != before and limit == 3
    with pytest.raises(ValueError, match="non-empty password"), owner.begin() as conn:
        ensure_reader_role(conn, role, "")


def test_only_application_roles_may_take_advisory_locks(owner: Engine, reader: tuple[str, Engine]) -> None:
    role, _engine = reader
    app_role = f"mm_app_test_{next(_names)}"
    with owner.begin() as conn:
        conn.execute(text(f"CREATE ROLE {app_role} NOSUPERUSER"))
        assert not can_take_advisory_locks(conn, app_role)  # PUBLIC no longer has them
        grant_advisory_locks(conn, app_role)
        assert can_take_advisory_locks(conn, app_role)
        assert not can_take_advisory_locks(conn, role)
        assert can_take_advisory_locks(conn, "postgres")
        conn.execute(text(f"REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pg_catalog FROM {app_role}"))
        conn.execute(text(f"DROP ROLE {app_role}"))


def _article(i: int) -> ScoredArticle:
    return ScoredArticle(
        id=f"w{i}", title=f"Story {i} moves markets", model_version="v1", topic="Markets", topic_confidence=0.9,
        sentiment="negative", p_negative=0.8, p_neutral=0.15, p_positive=0.05, score=-0.75, source="wire",
        published_at=datetime(2026, 12, 1, 9, i, tzinfo=timezone.utc), story_key=f"story-{i}",
    )


def test_reader_holding_locks_and_running_a_slow_query_does_not_stall_the_worker(
    owner: Engine, reader: tuple[str, Engine]
) -> None:
    _role, engine = reader
    lock_codes: list[str | None] = []
    slow: dict[str, object] = {}
    reader_busy, worker_done = threading.Event(), threading.Event()

    def greedy_reader() -> None:
        with engine.connect() as conn:
            # Try to take every story-key bucket lock the worker uses, held for the whole session.
            try:
                conn.execute(text("SELECT pg_advisory_lock(:ns, b) FROM generate_series(0, 255) AS b"),
                             {"ns": WORKER_LOCK_NAMESPACE})
                lock_codes.append(None)
            except exc.DBAPIError as failure:
                lock_codes.append(failure.orig.pgcode)  # type: ignore[union-attr]
                conn.rollback()
            started = time.monotonic()
            try:
                conn.execute(text("SELECT count(*) FROM articles"))  # the transaction now holds a lock on articles
                reader_busy.set()
                conn.execute(text("SELECT pg_sleep(30), count(*) FROM scores"))
                slow["code"] = None
            except exc.DBAPIError as failure:
                slow["code"] = failure.orig.pgcode  # type: ignore[union-attr]
            finally:
                slow["seconds"] = time.monotonic() - started
                reader_busy.set()
            worker_done.wait(15)  # keep the session (and any lock it holds) until the worker is through

    thread = threading.Thread(target=greedy_reader, daemon=True)
    thread.start()
    assert reader_busy.wait(20)

    started = time.monotonic()
    try:
        with owner.begin() as conn:  # the worker's write for one micro-batch
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))  # a stalled write fails here instead of hanging
            result = upsert_scored_batch(conn, [_article(i) for i in range(20)])
        write_seconds = time.monotonic() - started
    finally:
        worker_done.set()
        thread.join(30)

    assert result.articles_inserted == 20 and write_seconds < 2.0, write_seconds
    assert lock_codes == ["42501"], "the reader may not call pg_advisory_lock"
    assert slow["code"] == "57014" and slow["seconds"] < 10, slow  # statement_timeout cancelled the slow query


def test_restricting_advisory_locks_round_trips_and_needs_a_superuser(owner: Engine,
                                                                      reader: tuple[str, Engine]) -> None:
    """What migration 0007_reader_role does (upgrade) and undoes (downgrade), and its refusal without a superuser."""
    role, engine = reader
    with owner.begin() as conn:
        unrestrict_advisory_locks(conn)
        assert can_take_advisory_locks(conn, role)
        assert restrict_advisory_locks(conn) is True
        assert not can_take_advisory_locks(conn, role)
    with engine.connect() as conn:  # a non-superuser (here: the reader itself) changes nothing
        assert restrict_advisory_locks(conn) is False
    with owner.connect() as conn:
        names = advisory_lock_functions(conn)
    assert len(names) >= 16 and "pg_advisory_xact_lock(integer,integer)" in names  # every overload


def test_every_reader_role_update_retries_the_advisory_lock_revoke(owner: Engine, reader: tuple[str, Engine]) -> None:
    """Migration 0007 run by a non-superuser (a managed PostgreSQL, a first deploy as the owner) left PUBLIC able to
    take advisory locks and was never run again: the warning's "rerun db upgrade" could not work. The revoke now
    follows every upgrade with the role update."""
    role, _ = reader
    with owner.begin() as conn:
        unrestrict_advisory_locks(conn)  # what 0007 leaves behind without a superuser
        assert can_take_advisory_locks(conn, role)
        ensure_reader_role(conn, role, "pw:with'quote", ReaderLimits(statement_timeout_s=1.0))
        assert not can_take_advisory_locks(conn, role)
        assert can_take_advisory_locks(conn, "postgres")
