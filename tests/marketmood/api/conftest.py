"""The API built by its factory with the real bundled model and a fresh real PostgreSQL database per test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from marketmood.api import ApiDependencies, create_app
from marketmood.api.schemas import ComponentHealth
from marketmood.settings import ApiSettings
from models.prediction import StaticProvider
from storage.db import make_engine

TOKENS = ("alice:alice-secret", "shared-secret")


@pytest.fixture
def alice() -> dict[str, str]:
    """Headers of the named token ``alice:alice-secret`` (requests act as ``alice``)."""
    return {"Authorization": "Bearer alice-secret"}


@pytest.fixture
def shared() -> dict[str, str]:
    """Headers of the bare token ``shared-secret`` (the body may name the author)."""
    return {"Authorization": "Bearer shared-secret"}


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    from models import load_engine

    return load_engine()


def _broker_ok() -> ComponentHealth:
    return ComponentHealth(status="ok", detail="not checked in this test")


@contextlib.contextmanager
def _builder(engine, url: str) -> Iterator[Callable[..., TestClient]]:  # type: ignore[no-untyped-def]
    db = make_engine(url)
    clients: list[TestClient] = []

    def build(broker_check: Callable[[], ComponentHealth] = _broker_ok, **overrides: object) -> TestClient:
        settings = ApiSettings(**{"tokens": TOKENS, **overrides})
        deps = ApiDependencies(settings=settings, provider=StaticProvider(engine), db=db, broker_check=broker_check)
        client = TestClient(create_app(deps))
        clients.append(client)
        return client

    try:
        yield build
    finally:
        for client in clients:
            client.close()
        db.dispose()


@pytest.fixture
def make_client(engine, pg_url: str) -> Iterator[Callable[..., TestClient]]:  # type: ignore[no-untyped-def]
    """Clients on the session's shared database (for tests that do not write), e.g. ``make_client(max_texts=2)``."""
    with _builder(engine, pg_url) as build:
        yield build


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def make_db_client(engine, db_url: str) -> Iterator[Callable[..., TestClient]]:  # type: ignore[no-untyped-def]
    """Clients on a fresh database of their own (for tests that write or count rows)."""
    with _builder(engine, db_url) as build:
        yield build


@pytest.fixture
def db_client(make_db_client: Callable[..., TestClient]) -> TestClient:
    return make_db_client()
