"""Embedded PostgreSQL lifecycle: restart keeps the URL, a SIGKILLed owner's postmaster is recovered, and a
server shared by several processes runs until the last live one leaves."""

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
    User,
    embedded_postgres,
    leave_plan,
    owner_alive,
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


# -- several processes on one data dir (e.g. `marketmood worker` + `marketmood api` on one home) -------------

_USER_SCRIPT = """
import sys
from pathlib import Path
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from storage.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
url = server.start()
engine = create_engine(url, poolclass=NullPool)
conn = engine.connect()  # held open, as a running command's pool would
print('READY', server.attached, url, flush=True)
for line in sys.stdin:
    if line.strip() == 'query':
        try:
            value = conn.execute(text('SELECT 1')).scalar_one()
            print('OK', value, flush=True)
        except Exception as exc:  # noqa: BLE001 - the test reads the verdict
            print('ERR', type(exc).__name__, flush=True)
    elif line.strip() == 'exit':
        conn.close()
        server.stop()
        print('LEFT', flush=True)
        break
"""


class _UserProcess:
    """A real process using the embedded server in ``data_dir``, driven line by line over stdin."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _USER_SCRIPT, str(data_dir)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        ready = self._expect("READY")
        self.attached = ready.split()[1] == "True"

    def _expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # log lines may come first
            if line.startswith(prefix) or line.startswith("OK") or line.startswith("ERR"):
                return line.strip()
        raise AssertionError(f"user process {self.proc.pid} exited (rc {self.proc.wait(10)}) before {prefix}")

    def _send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def query(self) -> str:
        self._send("query")
        return self._expect("OK")

    def leave(self) -> None:
        self._send("exit")
        assert self._expect("LEFT") == "LEFT"
        assert self.proc.wait(30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _users(*names: str) -> dict[str, User]:
    return {name: User(pid=100 + i, create_time=1.0, token=name) for i, name in enumerate(names)}


def test_leave_plan_stops_only_when_no_other_live_user_remains() -> None:
    u = _users("owner", "api", "alerts")
    live = lambda user: user.token != "alerts"  # noqa: E731 - alerts was SIGKILLed
    assert leave_plan(u["owner"], list(u.values()), u["owner"], live) == (False, u["api"])
    assert leave_plan(u["api"], [u["api"], u["alerts"]], u["api"], live) == (True, None)  # a dead user holds nothing
    assert leave_plan(u["owner"], [u["owner"]], u["owner"], live) == (True, None)
    # an owner that never registered (a MarketMood from before registration) is still a user
    legacy = User(pid=7, create_time=1.0, token="")
    assert leave_plan(u["api"], [u["api"]], legacy, lambda user: True) == (False, legacy)
    assert leave_plan(u["api"], [u["api"]], None, lambda user: True) == (True, None)


def test_server_runs_while_any_live_process_uses_it_and_the_last_one_out_stops_it(scratch_dir: Path) -> None:
    """Before, the owner's exit stopped the server under the attached processes (their next query failed:
    "server closed the connection unexpectedly") until they were restarted."""
    procs: list[_UserProcess] = []
    try:
        owner = _UserProcess(scratch_dir)
        procs.append(owner)
        assert not owner.attached
        api, alerts = _UserProcess(scratch_dir), _UserProcess(scratch_dir)
        procs += [api, alerts]
        assert api.attached and alerts.attached
        pid = postmaster_running(scratch_dir)

        owner.leave()
        assert postmaster_running(scratch_dir) == pid
        assert api.query() == "OK 1" and alerts.query() == "OK 1"
        assert owner_alive(scratch_dir), "the owner file names a live user, so no one recovers it as stale"

        api.leave()
        assert alerts.query() == "OK 1"
        alerts.leave()
        assert postmaster_running(scratch_dir) is None
        assert not scratch_dir.with_name(scratch_dir.name + ".owner").exists()
    finally:
        for proc in procs:
            proc.kill()


def test_sigkilled_users_neither_take_the_server_down_nor_keep_it_up(scratch_dir: Path) -> None:
    procs: list[_UserProcess] = []
    try:
        owner, guest = _UserProcess(scratch_dir), _UserProcess(scratch_dir)
        procs += [owner, guest]
        pid = postmaster_running(scratch_dir)
        owner.kill()  # SIGKILL: no stop(), its owner file names a dead process
        assert guest.query() == "OK 1"

        # A new command while the guest runs attaches: the server is in use, not stale.
        newcomer = EmbeddedPostgres(scratch_dir)
        newcomer.start()
        assert newcomer.attached and postmaster_running(scratch_dir) == pid
        assert owner_alive(scratch_dir)
        guest.leave()
        assert _select_one(newcomer.url) == 1

        # A SIGKILLed guest does not keep the server up once the others have left.
        late = _UserProcess(scratch_dir)
        procs.append(late)
        late.kill()
        newcomer.stop()
        assert postmaster_running(scratch_dir) is None
    finally:
        for proc in procs:
            proc.kill()
