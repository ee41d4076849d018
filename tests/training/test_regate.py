"""``marketmood models gate VERSION``: the gate run again on a registered candidate whose gate could not run (real
PostgreSQL, the bundled model as champion and an equal copy as the candidate, the tiny data set)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.settings import get_settings
from models.artifact import ARTIFACT_FILE, BUNDLED_MODEL_DIR, TRAINING_CONFIG_FILE
from storage import registry as registry_sql
from storage.db import make_engine
from training import registry
from training.retrain import SPLIT_RECORD


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def run(db_url, tmp_path, monkeypatch):
    """``marketmood ARGS`` with this database; ``data`` is the data path the command sees."""
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    monkeypatch.setenv("MARKETMOOD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MARKETMOOD_RETRAIN__GATE_MIN_EXAMPLES", "20")  # the tiny sets vote
    monkeypatch.setenv("MARKETMOOD_RETRAIN__GATE_BOOTSTRAP_SAMPLES", "200")
    runner = CliRunner()

    def invoke(*args: str, data: Path):
        monkeypatch.setenv("MARKETMOOD_DATA_PATH", str(data))
        get_settings.cache_clear()
        return runner.invoke(cli, list(args))

    yield invoke
    get_settings.cache_clear()


def _copy(target: Path, version: str) -> Path:
    """The bundled model under another name, recording no data files (the tiny data set is not what it read)."""
    shutil.copytree(BUNDLED_MODEL_DIR, target, ignore=shutil.ignore_patterns("*.png"))
    info = json.loads((target / ARTIFACT_FILE).read_text())
    info["version"] = version
    (target / ARTIFACT_FILE).write_text(json.dumps(info))
    config = json.loads((target / TRAINING_CONFIG_FILE).read_text())
    config.pop("data_fingerprints", None)
    (target / TRAINING_CONFIG_FILE).write_text(json.dumps(config))
    return target


def test_a_candidate_whose_gate_could_not_run_is_gated_again_from_the_registry(run, engine, tmp_path, tiny_data):
    """`models register --promote` registers first: a gate that could not run (here: no labeled sets on this host)
    left a candidate that registering again refuses (versions are immutable) and no command could gate."""
    registry.register_artifact(engine, _copy(tmp_path / "champ", "rg-champ"), slim=True, extra_config={
        SPLIT_RECORD: {"seed": 13, "split_method": "cluster", "limit_per_dataset": None, "dev_fingerprint": None}})
    registry.promote(engine, "rg-champ", by="test")
    candidate = _copy(tmp_path / "cand", "rg-cand")
    no_data = tmp_path / "no-data"
    no_data.mkdir()

    failed = run("models", "register", str(candidate), "--promote", data=no_data)
    assert failed.exit_code == 1 and "failed: rg-cand" in failed.output, failed.output
    assert "`marketmood models gate rg-cand`" in failed.output
    assert run("models", "register", str(candidate), "--promote", data=tiny_data).exit_code == 1  # immutable

    gated = run("models", "gate", "rg-cand", "--by", "ana", data=tiny_data)
    assert gated.exit_code == 0 and "shadow: rg-cand" in gated.output, gated.output
    assert "# Promotion gate" in gated.output
    with engine.connect() as conn:
        record = registry_sql.get_version(conn, "rg-cand")
        assert registry_sql.get_alias(conn, registry_sql.SHADOW_ALIAS) == "rg-cand"
        assert registry_sql.get_alias(conn) == "rg-champ"
        moved = registry_sql.alias_history(conn, registry_sql.SHADOW_ALIAS)[-1]
    assert record["status"] == "shadow" and record["report"]["passed"] is True
    assert record["report"]["trigger"] == "regate" and moved["changed_by"] == "ana"

    again = run("models", "gate", "rg-cand", data=tiny_data)  # passed already: not gated twice
    assert again.exit_code == 1 and "rg-cand is shadow: only a candidate is gated" in again.output


def test_gate_refuses_what_it_cannot_judge_fairly(run, engine, tmp_path, tiny_data):
    registry.register_artifact(engine, _copy(tmp_path / "lost", "rg-lost"))
    with engine.begin() as conn:
        registry_sql.set_status(conn, "rg-lost", "rejected")
    lost = run("models", "gate", "rg-lost", data=tiny_data)
    assert lost.exit_code == 1 and "rg-lost is rejected" in lost.output and "lost a vote" in lost.output
    registry.register_artifact(engine, _copy(tmp_path / "retrained", "rg-retrained"),
                               extra_config={"retrain": {"trigger": "schedule", "champion": "x"}})
    retrained = run("models", "gate", "rg-retrained", data=tiny_data)
    assert retrained.exit_code == 1 and "feedback hold-out" in retrained.output
    unknown = run("models", "gate", "rg-ghost", data=tiny_data)
    assert unknown.exit_code == 1 and "unknown model version 'rg-ghost'" in unknown.output
