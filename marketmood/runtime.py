"""Resolve the broker and database a process runs against, starting embedded ones when none is configured.

``services(settings)`` is the single entry point for every long-running command: unset
``kafka_bootstrap`` -> an embedded tansu broker; unset ``database_url`` -> an embedded PostgreSQL in
``<home>/postgres``. Either way the migrations are applied and the topics exist before the caller runs,
and whatever was started here is stopped on exit, including on Ctrl-C (KeyboardInterrupt) and SIGTERM.

``database_engine(settings)`` is the same for commands that need only the database (alerts, retrain,
models, feedback, scheduler): a migrated SQLAlchemy engine, disposed (and the embedded server stopped) on exit.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from kafka.errors import KafkaError
from sqlalchemy.engine import Engine

from marketmood.logs import get_logger
from marketmood.schema import upgrade_database
from marketmood.settings import ConfigError, Settings
from storage.db import make_engine
from storage.embedded import EmbeddedPostgres
from storage.migrate import upgrade
from streams.broker import BrokerError, EmbeddedBroker
from streams.topics import ensure_topics

log = get_logger(__name__)


def usable_home(home: Path) -> Path:
    """``home`` created if missing; a file in the way or a read-only disk is a one-line ConfigError naming the setting
    (it was a NotADirectoryError traceback from deep inside the embedded server's start)."""
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"MARKETMOOD_HOME={home} cannot hold the embedded services' state: "
                          f"{exc.strerror or exc}") from None
    return home


def embedded_data_dir(home: Path) -> Path:
    return Path(home).expanduser().resolve() / "postgres"


@contextlib.contextmanager
def open_database(database_url: str | None, home: Path, *, upgrade_schema: bool = True) -> Iterator[str]:
    """The one database resolver: yield a usable URL; with ``database_url`` None run the embedded server
    under ``<home>/postgres`` for the block's duration (started, or attached to when another MarketMood
    process already runs it; the last process using it stops it on exit).

    ``upgrade_schema`` applies the migrations to the embedded database (the embedded default is
    self-managing); an external one is migrated by the caller (``services``/``database_engine``) or by an
    explicit ``marketmood db upgrade``.
    """
    if database_url is not None:
        yield database_url
        return
    server = EmbeddedPostgres(embedded_data_dir(usable_home(Path(home).expanduser())))
    server.start()
    try:
        if upgrade_schema:
            upgrade(server.url)
        yield server.url
    finally:
        server.stop()


@dataclass(frozen=True)
class Services:
    """Where the pipeline's broker and database are, and whether this process started them."""

    kafka_bootstrap: str
    database_url: str
    embedded_kafka: bool
    embedded_database: bool

    def env(self) -> dict[str, str]:
        """Environment that points a child process (worker, alerts) at the same services."""
        return {"MARKETMOOD_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "MARKETMOOD_DATABASE_URL": self.database_url}


class _Terminated(KeyboardInterrupt):
    """SIGTERM turned into the same unwinding path as Ctrl-C."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, so ``finally``/``with`` cleanup runs."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def services(settings: Settings, *, migrate: bool = True, create_topics: bool = True) -> Iterator[Services]:
    """Start what is not configured, prepare schema and topics, yield the resolved endpoints, stop on exit."""
    with contextlib.ExitStack() as stack:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            broker = EmbeddedBroker(usable_home(settings.home) / "kafka")
            bootstrap = broker.start()
            stack.callback(broker.stop)
        database_url = stack.enter_context(open_database(settings.database_url, settings.home, upgrade_schema=False))
        if migrate:
            upgrade_database(settings, database_url, strict=False)  # + Grafana's reader role
        if create_topics:
            try:
                ensure_topics(bootstrap, settings.topics)
            except KafkaError as exc:  # unreachable for 30 s, or refused: one line (cli.main), not a traceback
                raise BrokerError(f"cannot create or list the topics on Kafka at {bootstrap}: "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        resolved = Services(
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            embedded_kafka=settings.kafka_bootstrap is None,
            embedded_database=settings.database_url is None,
        )
        log.info(
            "services ready",
            kafka=bootstrap,
            embedded_kafka=resolved.embedded_kafka,
            embedded_database=resolved.embedded_database,
        )
        yield resolved


@contextlib.contextmanager
def database_engine(settings: Settings, *, migrate: bool = True) -> Iterator[Engine]:
    """An engine on the configured database, or the embedded one under ``<home>/postgres``.

    With ``migrate`` (the default) the schema is upgraded to the shipped heads first, on a configured
    database as well as on the embedded one (as ``services`` does). On exit the engine is disposed and an
    embedded server started here is stopped.
    """
    with open_database(settings.database_url, settings.home, upgrade_schema=False) as url:
        if migrate:
            upgrade_database(settings, url, strict=False)  # + Grafana's reader role
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
