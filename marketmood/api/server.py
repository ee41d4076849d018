"""Run the API from settings: resolve the database, check its schema, load the model, serve with uvicorn.

The database comes from ``marketmood.runtime.open_database`` (the one resolver): the embedded default is
migrated there (dev has no migrate step); an external database is never migrated by the API (several API
replicas must not race on migrations): when it is not at the shipped schema the API stops with one line
saying to run ``marketmood db upgrade``, before it loads a model or opens a port.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from sqlalchemy import Engine

from marketmood.api.app import ApiDependencies, create_app
from marketmood.api.health import kafka_health
from marketmood.api.schemas import ComponentHealth
from marketmood.engines import classifier_provider
from marketmood.runtime import open_database, sigterm_as_interrupt
from marketmood.settings import ApiSettings, Settings
from storage import migrate
from storage.db import make_engine, safe_url
from streams.broker import find_running


class SchemaNotReadyError(RuntimeError):
    """The external database is not at the schema this version expects (one line, says what to run)."""


def broker_check(settings: Settings) -> Callable[[], ComponentHealth]:
    """Configured broker, else an embedded one a local ``marketmood worker`` started (looked up per call)."""

    def check() -> ComponentHealth:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:

            bootstrap = find_running(settings.home / "kafka")
        return kafka_health(bootstrap, settings.topics.raw)

    return check


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Reading the revision makes Alembic log its dialect at INFO: noise in front of our one-line verdict."""
    alembic_log = logging.getLogger("alembic.runtime.migration")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(level)


def require_schema(url: str) -> None:
    """Raise SchemaNotReadyError unless the database is at the shipped heads (DatabaseUnavailableError if down)."""
    with _quiet_alembic():
        current = migrate.current_or_empty(url)
    heads = migrate.heads()
    if current != heads:
        at = ", ".join(current) or "base (never migrated)"
        raise SchemaNotReadyError(f"database {safe_url(url)} is at {at}, this MarketMood needs "
                                  f"{', '.join(heads)}: run `marketmood db upgrade` first")


def api_engine(url: str, api: ApiSettings) -> Engine:
    """The API's one pool: at most ``db_pool_size + db_max_overflow`` connections, whatever clients do."""
    return make_engine(url, pool_size=api.db_pool_size, max_overflow=api.db_max_overflow,
                       pool_timeout=api.db_pool_timeout_s, statement_timeout_ms=int(api.db_statement_timeout_s * 1000),
                       connect_args={"application_name": "marketmood-api"})


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, then stop what was started (the model watcher, the embedded database).

    The database is resolved first because the model comes from its registry (unless ``model.path`` pins
    an artifact); the model is loaded before any request is accepted. uvicorn re-raises the signal it
    caught once it has shut down; turning SIGTERM into KeyboardInterrupt lets that unwind through our
    ``with`` blocks instead of killing the process with the database still running.
    """
    import uvicorn  # lazy: only `marketmood api` needs the ASGI server

    embedded = settings.database_url is None
    with contextlib.suppress(KeyboardInterrupt), sigterm_as_interrupt(), \
            open_database(settings.database_url, settings.home, upgrade_schema=embedded) as url:
        if not embedded:
            require_schema(url)
        with classifier_provider(settings, url) as provider:
            engine = api_engine(url, settings.api)
            deps = ApiDependencies(settings=settings.api, provider=provider, db=engine,
                                   broker_check=broker_check(settings))
            try:
                uvicorn.run(create_app(deps), host=host, port=port, log_config=None, proxy_headers=True)
            finally:
                engine.dispose()
