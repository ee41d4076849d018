"""Embedded PostgreSQL lifecycle: restart keeps the URL, a SIGKILLed owner's postmaster is recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from storage.db import is_transient_error, make_engine, ping
from storage.embedded import (
    EmbeddedPostgres,
    embedded_postgres,
    postmaster_running,
    read_postmaster,
    recover_stale,
    start_server,
    stop_server,
)
from tests.fixtures.postgres import copy_data_dir, fresh_data_dir, remove_data_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch_dir(pristine_pgdata: Path) -> Iterator[Path]:
    """A private copy of the session's initialised data dir; whatever runs there is stopped at the end."""
    data_dir = copy_data_dir(pristine_pgdata, fresh_data_dir())
    try:
        yield data_dir
    finally:
        stop_server(data_dir)
        remove_data_dir(data_dir)


def _select_one(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT 1")).scalar_one())
    finally:
        engine.dispose()


def test_stop_and_start_keep_the_same_url_and_pooled_engines_recover(pg_server: EmbeddedPostgres, pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        pg_server.stop()
        assert not pg_server.running
        with pytest.raises(sa_exc.OperationalError) as excinfo:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        assert is_transient_error(excinfo.value)
        assert pg_server.start() == pg_server.url
        assert pg_server.url_for("marketmood") == pg_url
        with engine.connect() as conn:  # the pool's dead connections are replaced (pre-ping)
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
        if not pg_server.running:
            pg_server.start()


def test_context_manager_yields_a_working_url_and_stops_on_error(scratch_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with embedded_postgres(scratch_dir) as url:
            assert _select_one(url) == 1
            ping(url)
            assert postmaster_running(scratch_dir) is not None
            raise RuntimeError("boom")
    assert postmaster_running(scratch_dir) is None
    assert not scratch_dir.with_name(scratch_dir.name + ".owner").exists()


def test_a_start_that_fails_after_the_postmaster_is_up_leaves_no_server(scratch_dir: Path) -> None:
    """The server started, then applying its settings failed: before, start() raised with the postmaster left
    running (no owner would ever stop it; `with` never entered, so its exit never ran)."""
    with pytest.raises(Exception, match="work_mem"):  # psycopg2: InvalidParameterValue
        with embedded_postgres(scratch_dir, server_settings={"work_mem": "bogus"}):
            pass
    assert postmaster_running(scratch_dir) is None
    assert not scratch_dir.with_name(scratch_dir.name + ".owner").exists()


def test_live_owner_is_attached_and_sigkilled_owner_is_recovered(scratch_dir: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from storage.embedded import EmbeddedPostgres;"
            f"print('URL=' + EmbeddedPostgres(Path({str(scratch_dir)!r})).start(), flush=True); time.sleep(120)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert owner.stdout is not None
        url = next(line for line in owner.stdout if line.startswith("URL="))[4:].strip()
        assert url.startswith("postgresql+psycopg2://"), url
        first_pid = postmaster_running(scratch_dir)
        assert first_pid is not None

        # A second process while the owner lives: attach, never stop someone else's server.
        guest = EmbeddedPostgres(scratch_dir)
        assert guest.start() == url and guest.attached
        guest.stop()
        assert postmaster_running(scratch_dir) == first_pid

        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert postmaster_running(scratch_dir) == first_pid, "postmaster outlives a SIGKILLed owner"
        assert _select_one(url) == 1

        recovered = EmbeddedPostgres(scratch_dir)
        assert recovered.start() == url and not recovered.attached
        new_pid = postmaster_running(scratch_dir)
        assert new_pid is not None and new_pid != first_pid
        assert not psutil.pid_exists(first_pid) or psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
        assert _select_one(url) == 1
        recovered.stop()
        assert postmaster_running(scratch_dir) is None
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


def test_recover_stale_stops_a_server_started_outside_marketmood(scratch_dir: Path) -> None:
    """A postmaster started directly with pg_ctl (no owner file) counts as stale."""
    start_server(scratch_dir)  # plain pg_ctl start: no owner file, like a server left by another tool
    pid = postmaster_running(scratch_dir)
    assert pid is not None and read_postmaster(scratch_dir) is not None
    assert recover_stale(scratch_dir) is True
    assert postmaster_running(scratch_dir) is None
    assert recover_stale(scratch_dir) is False
    assert stop_server(scratch_dir) is False


def test_second_instance_in_the_same_process_attaches_and_never_stops_the_server(pg_server: EmbeddedPostgres) -> None:
    other = EmbeddedPostgres(pg_server.data_dir, database=pg_server.database)
    assert other.start() == pg_server.url
    assert other.attached
    other.stop()
    assert pg_server.running
    assert _select_one(pg_server.url) == 1
