"""Run the API from settings: resolve the database (embedded when unset), load the model, serve with uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from marketmood.api.app import ApiDependencies, create_app
from marketmood.api.health import kafka_health
from marketmood.api.schemas import ComponentHealth
from marketmood.settings import Settings


def broker_check(settings: Settings):  # -> Callable[[], ComponentHealth]
    """Configured broker, else an embedded one a local ``marketmood worker`` started (looked up per call)."""

    def check() -> ComponentHealth:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            from streams.broker import find_running

            bootstrap = find_running(settings.home / "kafka")
        return kafka_health(bootstrap, settings.topics.raw)

    return check


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database; unset -> the embedded one under ``home`` (migrated: dev has no migrate step)."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    from storage.embedded import embedded_postgres
    from storage.migrate import upgrade

    with embedded_postgres(settings.home / "postgres") as url:
        upgrade(url)
        yield url


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, then stop what was started (the model watcher, the embedded database).

    The database is resolved first because the model comes from its registry (unless ``model.path`` pins
    an artifact); the model is loaded before any request is accepted. uvicorn re-raises the signal it
    caught once it has shut down; turning SIGTERM into KeyboardInterrupt lets that unwind through our
    ``with`` blocks instead of killing the process with the database still running.
    """
    import uvicorn

    from marketmood.commands.pipeline import classifier_provider
    from marketmood.runtime import sigterm_as_interrupt
    from storage.db import make_engine

    with contextlib.suppress(KeyboardInterrupt), sigterm_as_interrupt(), database_url(settings) as url, \
            classifier_provider(settings, url) as provider:
        engine = make_engine(url, pool_size=5, max_overflow=5)
        deps = ApiDependencies(settings=settings.api, provider=provider, db=engine, broker_check=broker_check(settings))
        try:
            uvicorn.run(create_app(deps), host=host, port=port, log_config=None, proxy_headers=True)
        finally:
            engine.dispose()
