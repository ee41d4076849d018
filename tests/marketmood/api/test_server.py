"""``marketmood api`` start-up: ``serve`` resolves the database, loads the model, builds the app, cleans up;
against a database that is not migrated it stops with one line instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from marketmood.api import server
from marketmood.settings import ModelSettings, load_settings
from models.artifact import BUNDLED_MODEL_DIR
from storage import migrate
from storage.db import make_engine
from tests.fixtures.postgres import drop_database


def test_serve_builds_a_working_app_from_settings(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    captured: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        captured.update(kwargs)
        with TestClient(app) as client:
            captured["classify"] = client.post("/classify", json={"texts": ["Shares jump after record profit"]})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    settings = load_settings(database_url=pg_url, home=tmp_path, model=ModelSettings(path=BUNDLED_MODEL_DIR))
    server.serve(settings, "127.0.0.1", 8123)

    assert (captured["host"], captured["port"]) == ("127.0.0.1", 8123)
    response = captured["classify"]
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_api_on_a_fresh_unmigrated_database_stops_with_one_line(pg_server, pg_template_url: str,  # type: ignore[no-untyped-def]
                                                                  tmp_path: Path) -> None:
    """`marketmood api` against an external database nobody migrated: one line saying what to run, no traceback."""
    name = "mm_fresh_for_api"
    drop_database(pg_server, name)
    engine = make_engine(pg_server.url_for("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
        env.update(MARKETMOOD_DATABASE_URL=pg_server.url_for(name), MARKETMOOD_HOME=str(tmp_path),
                   MARKETMOOD_KAFKA_BOOTSTRAP="127.0.0.1:1")
        result = subprocess.run([str(Path(sys.executable).with_name("marketmood")), "api", "--port", "1"],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "base (never migrated)" in lines[0] and "run `marketmood db upgrade`" in lines[0]
        assert migrate.current(pg_server.url_for(name)) == ()  # the API did not half-migrate it either
    finally:
        drop_database(pg_server, name)
