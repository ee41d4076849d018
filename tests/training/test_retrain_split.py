"""The retrain judges on the champion's dev rows or not at all (real PostgreSQL, no training needed:
every refusal happens before the fine-tune)."""

from __future__ import annotations

import pytest

from marketmood.settings import load_settings
from models.artifact import ArtifactInfo, write_info
from storage.db import make_engine
from training import registry
from training.datasets import load_labeled_sets
from training.retrain import SPLIT_RECORD, champion_split, dev_fingerprint, run_retrain, split_mismatch


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _champion(engine, tmp_path, split: dict | None):
    folder = tmp_path / "champ"
    write_info(folder, ArtifactInfo(version="champ", base_encoder="enc", max_length=64))
    registry.register_artifact(engine, folder, extra_config={SPLIT_RECORD: split} if split else None)
    registry.promote(engine, "champ", by="test")


def _settings(tmp_path, data):
    return load_settings(home=tmp_path, data_path=data, retrain={"limit_per_dataset": 40})


def test_champion_split_reads_the_record_or_falls_back_to_the_training_config():
    assert champion_split({SPLIT_RECORD: {"seed": 5, "split_method": "cluster", "limit_per_dataset": None,
                                          "dev_fingerprint": "sha256:x"}})["seed"] == 5
    legacy = champion_split({"config": {"seed": 13, "limit_per_dataset": None}})
    assert legacy == {"seed": 13, "split_method": "exact", "limit_per_dataset": None, "dev_fingerprint": None}


def test_dev_fingerprint_changes_when_a_gate_row_changes(tiny_data):
    dev = load_labeled_sets(tiny_data, seed=13, limit_per_dataset=40).dev
    fp = dev_fingerprint(dev)
    assert fp == dev_fingerprint(load_labeled_sets(tiny_data, seed=13, limit_per_dataset=40).dev)
    assert fp != dev_fingerprint(load_labeled_sets(tiny_data, seed=14, limit_per_dataset=40).dev)


def test_retrain_refuses_another_seed_than_the_champions(engine, tmp_path, tiny_data):
    _champion(engine, tmp_path, {"seed": 13, "split_method": "cluster", "limit_per_dataset": 40,
                                 "dev_fingerprint": None})
    outcome = run_retrain(engine, _settings(tmp_path, tiny_data), train_overrides={"seed": 99, "max_steps": 1})
    assert outcome.status == "failed" and "seed=99" in outcome.reason and "seed=13" in outcome.reason
    outcome = run_retrain(engine, _settings(tmp_path, tiny_data), train_overrides={"limit_per_dataset": 30})
    assert outcome.status == "failed" and "limit_per_dataset=30" in outcome.reason


def test_retrain_refuses_when_the_dev_rows_differ_from_the_champions(engine, tmp_path, tiny_data):
    _champion(engine, tmp_path, {"seed": 13, "split_method": "cluster", "limit_per_dataset": 40,
                                 "dev_fingerprint": "sha256:" + "0" * 64})
    outcome = run_retrain(engine, _settings(tmp_path, tiny_data), train_overrides={"max_steps": 1})
    assert outcome.status == "failed" and "fingerprint" in outcome.reason


def test_a_challenger_that_records_no_select_fraction_chose_its_epoch_on_dev():
    """Artifacts from before the selection split record no ``select_fraction``: they early-stopped on dev, the
    gate's rows (``heldout`` reads the missing key as 0 too). Read as 0.1 before, so `register --promote` gated one."""
    champion = {"seed": 13, "split_method": "exact", "limit_per_dataset": None, "dev_fingerprint": None}
    assert "select_fraction=0" in split_mismatch(champion, {"config": {"seed": 13}})
    assert split_mismatch(champion, {"config": {"seed": 13, "select_fraction": 0.1}}) is None


def test_bench_gate_pair_judges_on_the_champions_own_split_unless_told_otherwise():
    """The bundled model records a cluster split; bench_gate --pair judged it on an exact one by default, whose rows
    it had mostly trained or selected on."""
    import argparse
    import json
    from pathlib import Path

    from benchmarks.bench_gate import pair_split

    bundled = json.loads((Path(__file__).resolve().parents[2] / "models/default_model/training_config.json").read_text())
    default = argparse.Namespace(seed=None, split_method=None)
    assert pair_split(default, bundled) == (13, "cluster", None)
    assert pair_split(default, {SPLIT_RECORD: {"seed": 5, "split_method": "exact", "limit_per_dataset": 40}}) == (
        5, "exact", 40)
    assert pair_split(argparse.Namespace(seed=7, split_method="exact"), bundled) == (7, "exact", None)


def test_retrain_without_labeled_sets_is_a_failed_outcome_not_a_traceback(engine, tmp_path):
    """A host whose data path holds no labeled sets (a scheduler replica deployed without the datasets): the retrain
    says so as a `failed` outcome (`marketmood retrain` prints it and exits 1), not a DatasetError traceback."""
    _champion(engine, tmp_path, {"seed": 13, "split_method": "cluster", "limit_per_dataset": 40,
                                 "dev_fingerprint": None})
    empty = tmp_path / "no-data"
    empty.mkdir()
    outcome = run_retrain(engine, _settings(tmp_path, empty), train_overrides={"max_steps": 1})
    assert outcome.status == "failed" and "no labeled datasets found" in outcome.reason, outcome
    assert outcome.champion == "champ"
