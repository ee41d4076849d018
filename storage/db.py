"""Engines, connections and sessions, plus the few database-level operations every process needs.

Engines use ``pool_pre_ping`` so a connection that died with a PostgreSQL restart is replaced on checkout
instead of failing the next batch; ``is_transient_error`` tells retry loops which errors are worth waiting
out (the server is down or restarting) and which are bugs.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

DEFAULT_CONNECT_TIMEOUT_S = 5

# Dead-peer detection of libpq connections. Keepalives find an idle connection whose server vanished after
# idle + interval * count = 25 s; but keepalives are not sent while written data is unacknowledged, so a write
# into a black-holed connection (no RST) waited for the kernel's retransmissions, ~15 minutes.
# tcp_user_timeout bounds that with the same 25 s, so both cases fail alike (Linux also ends the keepalive
# probing at tcp_user_timeout, so a shorter one would cut the keepalive budget short). The server's own
# statement/lock timeouts cannot help: they run on the server, which no longer hears the client.
KEEPALIVES_IDLE_S = 10
KEEPALIVES_INTERVAL_S = 5
KEEPALIVES_COUNT = 3
TCP_USER_TIMEOUT_MS = (KEEPALIVES_IDLE_S + KEEPALIVES_INTERVAL_S * KEEPALIVES_COUNT) * 1000
_LIBPQ_DRIVERS = frozenset({"psycopg2", "psycopg"})
_LIBPQ_TCP_USER_TIMEOUT = 120000  # libpq 12 added tcp_user_timeout; an older one refuses the keyword


DRIVER = "postgresql+psycopg2"  # the installed DBAPI driver


def normalize_database_url(value: str) -> str:
    """The URL with the installed driver, or ValueError saying what is wrong (never echoing the password).

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg2://``: SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which is not installed, and would fail at the first connect.
    """
    scheme, separator, rest = value.strip().partition("://")
    if not separator:
        raise ValueError(f"not a URL; expected {DRIVER}://user:password@host:5432/database")
    if scheme in ("postgres", "postgresql"):
        scheme = DRIVER
    if scheme != DRIVER:
        raise ValueError(f"unsupported scheme {scheme!r}: MarketMood talks to PostgreSQL through psycopg2, "
                         f"use {DRIVER}://user:password@host:5432/database")
    url = f"{scheme}://{rest}"
    try:
        port = make_url(url).port
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ValueError(f"cannot parse the URL ({type(exc).__name__}: {str(exc).split(':')[0]}); expected "
                         f"{DRIVER}://user:password@host:5432/database") from None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return url


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached; the message names the (password-free) URL and the cause."""


def make_engine(
    url: str,
    *,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    keepalives: bool = True,
    time_zone: str | None = "UTC",
    **kwargs: Any,
) -> Engine:
    """An engine with pre-ping and a bounded connect timeout (a dead server fails fast, not after minutes).

    ``statement_timeout_ms`` / ``lock_timeout_ms`` bound a hung statement or a lock held by someone else
    (the server cancels it and the caller's retry policy takes over). With ``keepalives`` (libpq drivers only),
    TCP keepalives and ``tcp_user_timeout`` end a connection whose server vanished without closing it, idle or
    in the middle of a write, after ``TCP_USER_TIMEOUT_MS``. libpq applies them per address and skips them on
    a unix socket (the embedded server), so they are passed whatever the host. The stream worker sets all.

    Sessions run in ``time_zone`` (UTC): timestamptz values come back in the session's zone, which is the
    server's (``initdb`` takes the host's) unless the client says otherwise, and the CLI, reports and API
    label the times they print as UTC. Grafana's own connections are not affected.
    """
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("connect_timeout", connect_timeout)
    options = [f"-c TimeZone={time_zone}"] if time_zone else []
    if statement_timeout_ms:
        options.append(f"-c statement_timeout={statement_timeout_ms}")
    if lock_timeout_ms:
        options.append(f"-c lock_timeout={lock_timeout_ms}")
    if options:
        connect_args["options"] = " ".join([connect_args.get("options", ""), *options]).strip()
    if keepalives:
        for key, value in _dead_peer_args(make_url(url).get_driver_name()).items():
            connect_args.setdefault(key, value)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, connect_args=connect_args, **kwargs)


def _dead_peer_args(driver: str) -> dict[str, int]:
    """libpq's keepalive and tcp_user_timeout keywords; none for a driver that is not libpq (they would be
    refused as unknown connect() arguments), no tcp_user_timeout for a libpq older than 12 (same)."""
    if driver not in _LIBPQ_DRIVERS:
        return {}
    args = {"keepalives": 1, "keepalives_idle": KEEPALIVES_IDLE_S, "keepalives_interval": KEEPALIVES_INTERVAL_S,
            "keepalives_count": KEEPALIVES_COUNT}
    if _libpq_version(driver) >= _LIBPQ_TCP_USER_TIMEOUT:
        args["tcp_user_timeout"] = TCP_USER_TIMEOUT_MS
    return args


def _libpq_version(driver: str) -> int:
    """The libpq the driver runs on (as 170004), 0 when it cannot be told."""
    try:
        if driver == "psycopg2":
            import psycopg2.extensions

            return int(psycopg2.extensions.libpq_version())
        import psycopg

        return int(psycopg.pq.version())
    except (ImportError, AttributeError):
        return 0


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """ORM sessions for the few places that want them (registry, API); bulk paths use Core connections."""
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction: commits on success, rolls back on any exception."""
    with engine.begin() as conn:
        yield conn


def safe_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def is_transient_error(exc: BaseException) -> bool:
    """True for connection-level failures (server down, restarting, network) that a retry can fix."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        orig = getattr(exc, "orig", None)
        code = getattr(orig, "pgcode", None) or ""
        # 08 connection exception, 57P admin shutdown / crash shutdown / cannot connect now, 40001/40P01 retry.
        return code.startswith(("08", "57P")) or code in {"40001", "40P01"}
    return isinstance(exc, (sa_exc.DisconnectionError, ConnectionError))


class DbErrorKind(enum.Enum):
    """How a failed write should be handled.

    TRANSIENT: the server is down, restarting, cancelled a hung statement or timed out on a lock: wait and
    retry. SYSTEMIC: the database refuses every write for a reason outside the data (permission denied,
    read-only server after a failover, missing table, disk full): also wait and retry (and alert through
    metrics), never dead-letter. DATA: this row's data is refused (a CHECK, a bad value): isolate the row.
    """

    TRANSIENT = "transient"
    SYSTEMIC = "systemic"
    DATA = "data"


def classify_db_error(exc: BaseException) -> DbErrorKind:
    """Sort a write error into TRANSIENT / SYSTEMIC / DATA (see DbErrorKind)."""
    if is_transient_error(exc):
        return DbErrorKind.TRANSIENT
    if isinstance(exc, sa_exc.DBAPIError):
        code = getattr(getattr(exc, "orig", None), "pgcode", None) or ""
        if code in {"55P03", "57014"}:  # lock_not_available (lock_timeout), query_canceled (statement_timeout)
            return DbErrorKind.TRANSIENT
        if code.startswith(("22", "23")):  # data exception, integrity constraint violation
            return DbErrorKind.DATA
        return DbErrorKind.SYSTEMIC
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return DbErrorKind.SYSTEMIC
    return DbErrorKind.DATA  # a Python error while building the statement: caused by the rows' values


def ping(url: str, timeout: int = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Raise DatabaseUnavailableError with a readable message unless ``SELECT 1`` succeeds."""
    engine = make_engine(url, connect_timeout=timeout, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except sa_exc.DBAPIError as exc:
        raise DatabaseUnavailableError(f"cannot reach PostgreSQL at {safe_url(url)}: {_first_line(exc)}") from exc
    finally:
        engine.dispose()


def create_database_if_missing(url: str) -> bool:
    """Create the URL's database (via the ``postgres`` maintenance database); True if it was created."""
    target = make_url(url)
    name = target.database
    if not name:
        raise ValueError(f"URL has no database name: {safe_url(url)}")
    admin = make_engine(
        target.set(database="postgres").render_as_string(hide_password=False),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            try:
                conn.execute(text(f"CREATE DATABASE {quoted}"))
            except (sa_exc.ProgrammingError, sa_exc.IntegrityError) as exc:  # created concurrently by another
                # process: 42P04 once it committed, 23505 (the catalog's unique key) while both were creating it
                if getattr(exc.orig, "pgcode", None) not in ("42P04", "23505"):
                    raise
                return False
            return True
    except sa_exc.OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot reach PostgreSQL at {safe_url(url)}: {_first_line(exc)}") from exc
    finally:
        admin.dispose()


def _first_line(exc: sa_exc.DBAPIError) -> str:
    return str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
