"""Shared pytest fixtures: real tansu (Kafka protocol) and real PostgreSQL, started once per session, and the
real model artifact that worker subprocesses load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.artifact import ARTIFACT_FILE, BUNDLED_MODEL_DIR

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.kafka",
]


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real model the workers pin (MARKETMOOD_MODEL__PATH): the bundled default, or
    MARKETMOOD_TEST_MODEL_PATH if set. Pinning keeps these tests off the registry (hot reload has its own)."""
    override = os.environ.get("MARKETMOOD_TEST_MODEL_PATH")
    if override:
        return Path(override)
    if not (BUNDLED_MODEL_DIR / ARTIFACT_FILE).is_file():
        pytest.fail("no bundled model at models/default_model: the repository must ship one")
    return BUNDLED_MODEL_DIR
