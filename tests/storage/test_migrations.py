"""Migrations: the migrated schema equals the models, and downgrade/upgrade round-trips cleanly."""

from __future__ import annotations

import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.pool import NullPool

from storage import migrate
from storage.db import make_engine
from storage.schema import Base
from tests.fixtures.postgres import drop_database

EXPECTED_TABLES = {t.name for t in Base.metadata.sorted_tables}


def _tables(url: str) -> set[str]:
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_template_is_at_head_and_matches_models(db_url: str) -> None:
    assert migrate.current(db_url) == migrate.heads()
    assert "0001_initial" in {r for r in _all_revisions()}
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True}),
                Base.metadata,
            )
    finally:
        engine.dispose()
    assert diff == [], f"migrations and storage/schema.py disagree: {diff}"
    assert _tables(db_url) == EXPECTED_TABLES


def test_hand_checked_indexes_exist(db_url: str) -> None:
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            defs = dict(conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname='public'")).all())
    finally:
        engine.dispose()
    assert "USING gin (tickers)" in defs["ix_articles_tickers"]
    assert defs["ux_alerts_open_scope"].startswith("CREATE UNIQUE INDEX")
    assert "WHERE (state <> 'resolved'::text)" in defs["ux_alerts_open_scope"]
    assert "(topic, event_time)" in defs["ix_scores_topic_event_time"]


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    assert migrate.downgrade(db_url, "base") == ()
    assert _tables(db_url) == set()
    assert migrate.upgrade(db_url) == migrate.heads()
    assert _tables(db_url) == EXPECTED_TABLES


def test_upgrade_creates_missing_database_and_is_idempotent(pg_server, pg_template_url: str) -> None:  # type: ignore[no-untyped-def]
    url = pg_server.url_for("mm_fresh_created_by_upgrade")
    try:
        with pytest.raises(Exception, match="does not exist"):
            migrate.current(url)
        assert migrate.upgrade(url) == migrate.heads()
        assert migrate.upgrade(url) == migrate.heads()  # second run: nothing to do, no error
        assert migrate.is_up_to_date(url)
        assert _tables(url) == EXPECTED_TABLES
    finally:
        from tests.fixtures.postgres import drop_database

        drop_database(pg_server, "mm_fresh_created_by_upgrade")


def _all_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    return [s.revision for s in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()]


@pytest.mark.parametrize("revision", ["0001_initial"])
def test_initial_revision_is_the_root(revision: str) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config()).get_revision(revision)
    assert script is not None and script.down_revision is None


_MIGRATE_ON_GO = """
import sys, time
from pathlib import Path
from storage import migrate
go = Path(sys.argv[2])
while not go.exists():  # imports done: start together
    time.sleep(0.005)
print(",".join(migrate.upgrade(sys.argv[1])))
"""


def test_services_starting_together_all_migrate_a_fresh_database(pg_server, tmp_path) -> None:
    """Every command migrates at start: services starting together (separate processes, as in production) on a
    fresh database failed, on the catalog's unique key creating the database (23505) or on objects created
    twice. Three processes, released together once imported, must all end at the heads."""
    import subprocess
    import sys

    names = [f"race_{i}" for i in range(3)]
    try:
        for name in names:  # a few rounds: the overlap is likely, not certain
            go = tmp_path / f"go-{name}"
            procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE_ON_GO, pg_server.url_for(name), str(go)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
            time.sleep(3)  # imports (sqlalchemy, alembic) before the release
            go.touch()
            outcomes = [p.communicate(timeout=120) for p in procs]
            failed = [err[-600:] for p, (_, err) in zip(procs, outcomes) if p.returncode != 0]
            assert not failed, failed
            assert [out.strip() for out, _ in outcomes] == [",".join(migrate.heads())] * 3
    finally:
        for name in names:
            drop_database(pg_server, name)


def test_the_pipeline_panels_time_filter_on_scored_at_can_use_an_index(db_url: str) -> None:
    """Model versions in use, scored per minute and scoring latency filter on ``scores.scored_at`` at every
    refresh: with no index on it each refresh read the whole table (0010_scores_scored_at)."""
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL enable_seqscan = off"))  # the plan says whether an index *can* serve it
            plan = "\n".join(conn.execute(text(
                "EXPLAIN SELECT count(*) FROM scores WHERE scored_at >= now() - interval '1 hour'")).scalars())
    finally:
        engine.dispose()
    assert "ix_scores_scored_at" in plan, plan


def test_the_alembic_cli_runs_on_the_url_given_with_x_as_alembic_ini_says(db_url: str) -> None:
    """storage/alembic.ini tells developers to run ``alembic -c storage/alembic.ini -x url=... revision
    --autogenerate``; env.py read no -x argument, so that command failed with "set sqlalchemy.url". Here the CLI
    reads the template's revision and finds the models and the migrations in step (what autogenerate compares)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    base = [sys.executable, "-m", "alembic", "-c", "storage/alembic.ini", "-x", f"url={db_url}"]
    current = subprocess.run([*base, "current"], cwd=root, capture_output=True, text=True, timeout=120)
    assert current.returncode == 0, current.stderr
    assert all(head in current.stdout for head in migrate.heads()), current.stdout
    check = subprocess.run([*base, "check"], cwd=root, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
