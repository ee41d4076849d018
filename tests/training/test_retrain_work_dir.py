"""What a retrain leaves in its work dir (real PostgreSQL and the bundled model as champion; the fine-tune itself is
replaced by a copy of the champion, so the gate, the registration and the clean-up run for real in seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from marketmood.settings import load_settings
from models.artifact import ARTIFACT_FILE, BUNDLED_MODEL_DIR, ArtifactInfo, write_info
from storage import registry as registry_sql
from storage.db import make_engine
from training import registry
from training.retrain import REPORT_MD, SPLIT_RECORD, run_retrain


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _copy(source: Path, target: Path, version: str, parent: str | None = None) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.png", "checkpoints"))
    info = json.loads((target / ARTIFACT_FILE).read_text())
    info.update(version=version, parent_version=parent)
    (target / ARTIFACT_FILE).write_text(json.dumps(info))
    return target


@pytest.fixture
def fake_train(monkeypatch):
    """``training.trainer.train`` writing what a real run writes, in size order: a model, its fp32 weights (left out
    of a slim registry entry) and the resume checkpoint."""

    def train(config, progress: bool = False) -> Path:
        out = _copy(BUNDLED_MODEL_DIR, Path(config.output_dir), config.version, config.parent_version)
        (out / "model.safetensors").write_bytes(b"\0" * 4096)
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "last.pt").write_bytes(b"\0" * 4096)
        return out

    monkeypatch.setattr("training.trainer.train", train)


@pytest.fixture
def champion_settings(engine, tmp_path, tiny_data):
    """A copy of the bundled model registered (slim) and active as champion; the settings of a small retrain and
    its work dir."""
    champion = _copy(BUNDLED_MODEL_DIR, tmp_path / "champ", "wd-champ")
    registry.register_artifact(engine, champion, slim=True, extra_config={SPLIT_RECORD: {
        "seed": 13, "split_method": "cluster", "limit_per_dataset": 40, "dev_fingerprint": None}})
    registry.promote(engine, "wd-champ", by="test")
    settings = load_settings(home=tmp_path / "home", data_path=tiny_data,
                             retrain={"limit_per_dataset": 40, "gate_bootstrap_samples": 200, "gate_guard_slices": []})
    work = tmp_path / "home" / "retrain"
    return settings, work


def test_a_retrain_removes_the_folders_of_earlier_registered_challengers(engine, tmp_path, champion_settings,
                                                                         fake_train):
    """Every scheduled retrain left its challenger's full folder (fp32 weights, int8 ONNX: ~110 MB) in the
    work dir for good. Once registered, the registry holds it: the next retrain deletes it, keeps its own folder for
    an operator, and never touches a folder the registry lacks (a run that crashed before registering)."""
    settings, work = champion_settings

    first = run_retrain(engine, settings, train_overrides={"version": "wd-1"}, promote=False)
    assert first.status in {"registered", "rejected"}, first.reason
    assert (work / "wd-1" / REPORT_MD).is_file() and not (work / "wd-1" / "checkpoints").exists()
    crashed = work / "wd-crashed"  # trained, never registered: what an operator debugs
    write_info(crashed, ArtifactInfo(version="wd-crashed", base_encoder="enc", max_length=64))
    (work / "notes").mkdir()

    second = run_retrain(engine, settings, train_overrides={"version": "wd-2"}, promote=False)
    assert second.status in {"registered", "rejected"}, second.reason
    assert sorted(p.name for p in work.iterdir()) == ["notes", "wd-2", "wd-crashed"]
    assert (work / "wd-2" / REPORT_MD).is_file() and (work / "wd-2" / "model.safetensors").is_file()
    # Nothing was lost that the registry does not hold: the deleted challenger is still served from it.
    assert (registry.fetch_artifact(engine, "wd-1", tmp_path / "cache") / "model.int8.onnx").is_file()
    with engine.connect() as conn:
        assert registry_sql.get_version(conn, "wd-1")["report"]["challenger"] == "wd-1"


def test_prune_keeps_what_the_registry_does_not_hold(engine, tmp_path):
    from training.retrain import prune_work_dir

    work = tmp_path / "work"
    for version in ("old", "current", "unregistered"):
        write_info(work / version, ArtifactInfo(version=version, base_encoder="enc", max_length=64))
    registry.register_artifact(engine, work / "old")
    registry.register_artifact(engine, work / "current")
    renamed = work / "copied-by-hand"  # a registered artifact, but not a retrain's folder (name != version)
    shutil.copytree(work / "old", renamed)
    removed = prune_work_dir(engine, work, keep="current")
    assert removed == [work / "old"]
    assert sorted(p.name for p in work.iterdir()) == ["copied-by-hand", "current", "unregistered"]
    assert prune_work_dir(engine, tmp_path / "never-made", keep="x") == []


def test_the_folder_of_the_serving_model_is_kept_until_it_leaves_service(engine, tmp_path, champion_settings,
                                                                          fake_train):
    """With the default slim registry (no fp32 weights), a challenger's work folder is the only copy of its fp32
    weights. An operator promoted one (``models promote``): the next retrain, even one rejected, deleted the folder
    of the model in service. Kept while it is active (or in shadow); pruned once it has left service."""
    settings, work = champion_settings

    assert run_retrain(engine, settings, train_overrides={"version": "wd-1"}, promote=False).status in {
        "registered", "rejected"}
    with engine.begin() as conn:  # as `marketmood models promote wd-1` would, whatever its gate said
        registry_sql.set_alias(conn, "wd-1", by="ana", reason="manual")
    assert run_retrain(engine, settings, train_overrides={"version": "wd-2"}, promote=False).status in {
        "registered", "rejected"}
    assert (work / "wd-1" / "model.safetensors").is_file(), sorted(p.name for p in work.iterdir())
    assert not (registry.fetch_artifact(engine, "wd-1", tmp_path / "cache") / "model.safetensors").exists()  # only copy
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "wd-1"
    with engine.begin() as conn:  # wd-1 leaves service: its folder goes with the next retrain
        registry_sql.set_alias(conn, "wd-champ", by="ana", reason="manual")
    from training.retrain import prune_work_dir

    assert prune_work_dir(engine, work, keep="wd-2") == [work / "wd-1"]
