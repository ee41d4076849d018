"""storage.db: retry classification on real errors, readable unreachable-server errors, database creation."""

from __future__ import annotations

import os
import socket

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import Connection, text
from sqlalchemy.pool import NullPool

from storage.db import (
    DatabaseUnavailableError,
    create_database_if_missing,
    is_transient_error,
    make_engine,
    ping,
    safe_url,
    transaction,
)
from storage.embedded import EmbeddedPostgres
from tests.fixtures.postgres import drop_database
from tests.streams.harness import FreezableProxy

DEAD_URL = "postgresql+psycopg2://postgres:secret@/marketmood?host=/nonexistent-socket-dir"


def test_connection_failures_are_transient_and_sql_errors_are_not(db_url: str) -> None:
    dead = make_engine(DEAD_URL, poolclass=NullPool)
    with pytest.raises(sa_exc.OperationalError) as down:
        dead.connect()
    assert is_transient_error(down.value)

    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with pytest.raises(sa_exc.ProgrammingError) as syntax:
            with engine.connect() as conn:
                conn.execute(text("SELEC 1"))
        assert not is_transient_error(syntax.value)
        with pytest.raises(sa_exc.IntegrityError) as integrity:
            with transaction(engine) as conn:
                conn.execute(text("INSERT INTO model_versions (version, status) VALUES ('v', 'bogus')"))
        assert not is_transient_error(integrity.value)
        assert not is_transient_error(ValueError("not a database error"))
    finally:
        engine.dispose()


def test_ping_names_the_server_without_its_password() -> None:
    with pytest.raises(DatabaseUnavailableError) as excinfo:
        ping(DEAD_URL, timeout=2)
    message = str(excinfo.value)
    assert "nonexistent-socket-dir" in message and "secret" not in message
    assert "secret" not in safe_url(DEAD_URL)


def test_create_database_if_missing_is_idempotent(pg_server: EmbeddedPostgres) -> None:
    url = pg_server.url_for("mm_created_once")
    try:
        assert create_database_if_missing(url) is True
        assert create_database_if_missing(url) is False
        ping(url)
    finally:
        drop_database(pg_server, "mm_created_once")


def test_sessions_run_in_utc_whatever_the_servers_zone(db_url: str) -> None:
    """timestamptz values come back in the session's zone; the CLI, reports and API print them as UTC."""
    from datetime import timedelta

    from sqlalchemy.engine import make_url

    admin = make_engine(db_url, poolclass=NullPool)
    try:
        with admin.begin() as conn:  # a server (or database) whose default zone is not UTC
            conn.execute(text(f'ALTER DATABASE "{make_url(db_url).database}" SET timezone = \'Europe/Berlin\''))
    finally:
        admin.dispose()
    query = text("SELECT current_setting('TimeZone'), TIMESTAMPTZ '2026-01-15 12:00:00+00'")
    for time_zone, expected, offset in (("UTC", "UTC", timedelta(0)), (None, "Europe/Berlin", timedelta(hours=1))):
        engine = make_engine(db_url, poolclass=NullPool, time_zone=time_zone, statement_timeout_ms=5000)
        try:
            with engine.connect() as conn:
                zone, value = conn.execute(query).one()
                assert (zone, value.utcoffset()) == (expected, offset)
                assert value.hour == 12 + offset.seconds // 3600
                assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "5s"  # other options kept
        finally:
            engine.dispose()


def _client_socket(conn: Connection) -> socket.socket:
    """A duplicate of the live connection's client socket (family detected), to read its options."""
    return socket.socket(fileno=os.dup(conn.connection.dbapi_connection.fileno()))


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux-only")
def test_tcp_connections_end_a_black_holed_write_within_the_keepalive_budget(db_url: str) -> None:
    """Keepalives are not sent while written data is unacknowledged: a write into a connection whose server
    vanished without a RST waited for the kernel's retransmissions (~15 minutes) before the worker's retry
    policy could act. The live TCP socket carries keepalives and a tcp_user_timeout of the same budget."""
    proxy = FreezableProxy(db_url)  # the embedded server listens on a unix socket only: a TCP front
    engine = make_engine(proxy.url, poolclass=NullPool)
    try:
        with engine.connect() as conn, _client_socket(conn) as sock:
            assert sock.family == socket.AF_INET
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            idle, interval, count = (sock.getsockopt(socket.IPPROTO_TCP, option)
                                     for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT))
            assert (idle, interval, count) == (10, 5, 3)
            user_timeout_ms = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
            assert user_timeout_ms == (idle + interval * count) * 1000  # 0 = the kernel's ~15 minutes
            assert conn.connection.dbapi_connection.info.dsn_parameters["tcp_user_timeout"] == str(user_timeout_ms)
    finally:
        engine.dispose()
        proxy.close()


def test_unix_socket_connections_accept_the_tcp_only_options(db_url: str) -> None:
    """libpq skips keepalives and tcp_user_timeout on a unix socket (the embedded server) instead of refusing
    them, so make_engine passes them whatever the host is."""
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn, _client_socket(conn) as sock:
            assert sock.family == socket.AF_UNIX
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            params = conn.connection.dbapi_connection.info.dsn_parameters
            assert params["keepalives"] == "1" and int(params["tcp_user_timeout"]) > 0, params
    finally:
        engine.dispose()
