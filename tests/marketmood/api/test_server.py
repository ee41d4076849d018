"""``marketmood api`` start-up: ``serve`` resolves the database, loads the model, builds the app, cleans up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketmood.api import server
from marketmood.settings import ModelSettings, load_settings
from models.artifact import BUNDLED_MODEL_DIR


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
