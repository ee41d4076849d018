"""Test entry point: the stream worker with the registry-backed provider (``python -m tests.streams.hot_reload_worker``).

Configuration comes from MARKETMOOD_* environment variables like ``marketmood worker``.
"""

from __future__ import annotations

from marketmood.logs import configure_logging
from marketmood.settings import get_settings
from storage.db import make_engine
from streams.hot_reload import RegistryProvider
from streams.worker import run_worker


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    assert settings.database_url and settings.kafka_bootstrap, "set MARKETMOOD_DATABASE_URL and _KAFKA_BOOTSTRAP"
    provider = RegistryProvider.from_settings(settings, make_engine(settings.database_url)).start()
    try:
        run_worker(settings, bootstrap=settings.kafka_bootstrap, database_url=settings.database_url, provider=provider)
    finally:
        provider.stop()


if __name__ == "__main__":
    main()
