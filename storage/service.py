"""Resolve "the database" for a process: the configured URL, or the embedded server under MarketMood's home.

Every command that needs PostgreSQL goes through :func:`open_database` so the embedded default behaves
the same everywhere: started (or attached to, when another MarketMood process already runs it), migrated
to the shipped heads, and stopped on exit only by the process that started it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from storage import migrate
from storage.embedded import EmbeddedPostgres


def embedded_data_dir(home: Path) -> Path:
    return Path(home).expanduser().resolve() / "postgres"


@contextlib.contextmanager
def open_database(database_url: str | None, home: Path, *, upgrade: bool = True) -> Iterator[str]:
    """Yield a usable URL; with ``database_url`` None run the embedded server for the block's duration.

    ``upgrade`` applies migrations to the embedded database (the embedded default is self-managing);
    an external database is migrated only by an explicit ``marketmood db upgrade``.
    """
    if database_url is not None:
        yield database_url
        return
    server = EmbeddedPostgres(embedded_data_dir(home))
    server.start()
    try:
        if upgrade:
            migrate.upgrade(server.url)
        yield server.url
    finally:
        server.stop()
