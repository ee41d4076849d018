"""End to end on a tiny slice: a real fine-tune, the gate on the CPU serving path, registry, promotion.

Two tiny trainings (a few optimizer steps on a few dozen rows per set): a champion, then ``run_retrain``'s
challenger (plus analyst feedback). Models that small are noise, so which one wins is not asserted: the
test checks that the verdict, the stored report, the statuses and the alias agree. A second retrain
started while the first one trains must skip (advisory lock). The gate's accept/reject rules are then
checked on real artifacts made deterministically worse (label map reordered, exported model corrupted),
and on hand-written metrics in test_gate.py.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from marketmood.settings import load_settings
from storage import feedback as feedback_sql
from storage import registry as registry_sql
from storage.db import make_engine
from training import registry
from training.config import TrainConfig
from training.gate import DEFAULT_GUARD_SLICES, evaluate_gate
from models.artifact import ARTIFACT_FILE
from training.retrain import FEEDBACK_SET, REPORT_MD, candidate, gate_config_from, id_ranges, run_retrain, smoke_test

# Two tiny fine-tunes (each about a minute on an idle 2-core machine, far more on a loaded one).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TINY = {"limit_per_dataset": 40, "max_steps": 10, "epochs": 1, "batch_size": 16, "max_length": 32, "lr": 2e-4,
        "seed": 13, "threads": 1}


def _settings(home: Path):
    # Tiny sets: let 20-row sets vote (the shipped minimum is 300) so the gate's votes are exercised.
    return load_settings(home=home, retrain={"limit_per_dataset": TINY["limit_per_dataset"], "epochs": 1,
                                             "feedback_holdout_fraction": 0.25, "gate_min_examples": 20,
                                             "gate_bootstrap_samples": 200, "shadow_hours": 24,
                                             "gate_guard_slices": [*DEFAULT_GUARD_SLICES, MISSING_GUARD]})


MISSING_GUARD = "no_such_set/valid.csv agreement=100"  # a data path without that set: skipped, named in the report

FEEDBACK = [
    ("Profit warning sends shares tumbling to a five-year low", "negative", None),
    ("Regulator fines the bank for misleading customers", "negative", "Legal | Regulation"),
    ("Company raises dividend after record cash flow", "positive", "Dividend"),
    ("Quarterly earnings beat expectations, guidance raised", "positive", "Earnings"),
    ("Board appoints a new chief financial officer", "neutral", "Personnel Change"),
    ("Oil prices slide as inventories build", "negative", "Energy | Oil"),
    ("Fed minutes show officials split on the next hike", "neutral", "Fed | Central Banks"),
    ("Airline swings to a loss on fuel costs", "negative", "Earnings"),
]


@pytest.fixture(scope="module")
def world(pg_url, tmp_path_factory):
    """A shared database with a tiny champion and analyst feedback."""
    from training.trainer import train

    home = tmp_path_factory.mktemp("retrain-home")
    settings = _settings(home)
    engine = make_engine(pg_url)
    champion_dir = train(TrainConfig(data_path=settings.data_path, output_dir=home / "champion",
                                     version="tiny-champion", **TINY), progress=False)
    registry.register_artifact(engine, champion_dir, slim=True)
    registry.promote(engine, "tiny-champion", by="test")
    with engine.begin() as conn:
        for text, sentiment, topic in FEEDBACK:  # two analysts agree on each label: it is accepted
            for author in ("ana", "bo"):
                feedback_sql.insert_feedback(conn, article_id=None, text=text, sentiment=sentiment, topic=topic,
                                             author=author)
        # one analyst alone: never trained on, never held out
        feedback_sql.insert_feedback(conn, article_id=None, text="Lone label stays out", sentiment="positive",
                                     topic=None, author="mallory")
        for author in ("ana", "bo"):  # agreed, but nothing the model can read: left out, counted (it stopped the gate)
            feedback_sql.insert_feedback(conn, article_id=None, text="\ufffd\ufffd", sentiment="neutral", topic=None,
                                         author=author)
    yield settings, engine, champion_dir
    engine.dispose()


def test_retrain_end_to_end_stores_a_gated_challenger_and_a_concurrent_retrain_skips(world):
    settings, engine, _ = world
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "outcome", run_retrain(engine, settings, by="test", train_overrides=dict(TINY))))
    worker.start()
    # While the first retrain trains, a second one (another replica) must not start.
    import time

    deadline = time.monotonic() + 60
    second = None
    while time.monotonic() < deadline and worker.is_alive():
        with engine.connect() as conn:
            held = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").scalar_one()
        if held:
            second = run_retrain(engine, settings, by="replica-2", train_overrides=dict(TINY))
            break
        time.sleep(0.1)
    worker.join(timeout=600)
    assert second is not None and second.status == "skipped" and "advisory lock" in second.reason

    outcome = result["outcome"]
    assert outcome.status in {"shadow", "rejected"}, outcome.reason
    assert outcome.champion == "tiny-champion"
    with engine.connect() as conn:
        active = registry_sql.get_alias(conn)
        record = registry_sql.get_version(conn, outcome.version)
        stored = registry_sql.get_artifact(conn, outcome.version)
    report = record["report"]
    # Verdict, report, status and alias agree.
    assert report["passed"] is (outcome.status == "shadow")
    assert record["status"] == outcome.status
    assert active == "tiny-champion"  # a passing challenger goes to the shadow alias, never straight to active
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn, "shadow") == (outcome.version if outcome.status == "shadow" else None)
    failures = [c["name"] for c in report["checks"] if not c["passed"]]
    assert bool(failures) is (outcome.status == "rejected")
    assert all(c["passed"] for c in report["checks"] if c["name"] in {"label_maps", "smoke_test", "latency"})
    assert {"pooled_macro_f1[base]", "paired_macro_f1[phrasebank/sentiment]"} <= {c["name"] for c in report["checks"]}
    # The default guard slice (PhraseBank's all-agree rows, read whole from valid.csv) is scored and judged.
    guard = next(c for c in report["checks"] if c["name"].startswith("guard_macro_f1[guard:financial_phrasebank/"))
    assert "upper bound must be >=" in guard["detail"] or "informational only" in guard["detail"]
    assert report["eval_sizes"]["guard:financial_phrasebank/valid.csv agreement=100"] > 0
    assert report["guard_slices_missing"] == [MISSING_GUARD]  # skipped and named, not a failed retrain
    assert report["gate_split"]["dev_fingerprint"].startswith("sha256:")
    assert record["training_config"]["gate_split"] == report["gate_split"]
    assert report["feedback"]["merge"]["pending"] == 1  # mallory's lone label
    assert record["parent_version"] == "tiny-champion" and report["challenger"] == outcome.version
    # Same frozen dev sets for both models, plus the time-forward feedback slice (2 newest of 8 rows).
    assert set(report["metrics"]["champion"]) == set(report["metrics"]["challenger"])
    assert {"phrasebank", "tweet_topic", FEEDBACK_SET} <= set(report["metrics"]["challenger"])
    assert report["eval_sizes"][FEEDBACK_SET] == 2 and report["feedback"]["train"] == 6
    assert report["feedback"]["unreadable"] == 1
    assert "negative" in report["per_class"]["phrasebank"]["sentiment"]
    assert "# Promotion gate" in report["markdown"]
    assert record["training_config"]["retrain"]["feedback_train"] == 6
    with engine.connect() as conn:  # what it read is recorded by id: every row, all committed before the run
        read = [row.id for row in feedback_sql.fetch_feedback(conn)]
    assert record["training_config"]["retrain"]["feedback_ids"] == id_ranges(read)
    # The stored artifact is what a worker needs: it unpacks and carries the report.
    assert stored is not None and len(stored[0]) < 40_000_000
    unpacked = registry.fetch_artifact(engine, outcome.version, Path(settings.home) / "fetch-test")
    assert (unpacked / REPORT_MD).read_text() == report["markdown"]
    assert (unpacked / "model.int8.onnx").is_file() and not (unpacked / "model.safetensors").exists()
    # The work folder keeps the model and its report, not the resume checkpoint (~4x the model, every retrain).
    work = Path(settings.home) / "retrain" / outcome.version
    assert (work / REPORT_MD).is_file() and not (work / "checkpoints").exists()


def test_a_guard_slice_that_cannot_be_read_fails_the_retrain_before_training(world):
    settings, engine, _ = world
    broken = settings.model_copy(update={"retrain": settings.retrain.model_copy(
        update={"gate_guard_slices": ("financial_phrasebank/valid.csv annotators=9",)})})
    work_dir = Path(settings.home) / "retrain"
    trained_before = sorted(work_dir.glob("*")) if work_dir.is_dir() else []
    outcome = run_retrain(engine, broken, by="test", train_overrides=dict(TINY))
    assert outcome.status == "failed" and "retrain.gate_guard_slices" in outcome.reason and "annotators" in outcome.reason
    assert (sorted(work_dir.glob("*")) if work_dir.is_dir() else []) == trained_before  # nothing was trained


def _variant(source: Path, target: Path, version: str) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "*.png"))
    info = json.loads((target / ARTIFACT_FILE).read_text())
    info["version"] = version
    (target / ARTIFACT_FILE).write_text(json.dumps(info))
    return target


def test_gate_on_real_artifacts_accepts_an_equal_model_and_rejects_broken_ones(world, tmp_path):
    settings, _, champion_dir = world
    from training.datasets import load_labeled_sets

    sets = load_labeled_sets(settings.data_path, seed=13, limit_per_dataset=TINY["limit_per_dataset"]).dev
    texts = [ex.text for exs in sets.values() for ex in exs[:16]]
    config = gate_config_from(settings)
    champ = candidate("tiny-champion", champion_dir, sets, texts, smoke=False)

    same = candidate("same", _variant(champion_dir, tmp_path / "same", "same"), sets, texts, smoke=True)
    assert evaluate_gate(champ, same, config).passed  # equal metrics: no drop

    relabeled_dir = _variant(champion_dir, tmp_path / "relabeled", "relabeled")
    info = json.loads((relabeled_dir / ARTIFACT_FILE).read_text())
    info["labels"]["sentiment"] = list(reversed(info["labels"]["sentiment"]))
    (relabeled_dir / ARTIFACT_FILE).write_text(json.dumps(info))
    relabeled = candidate("relabeled", relabeled_dir, sets, texts, smoke=True)
    assert "label_maps" in {c.name for c in evaluate_gate(champ, relabeled, config).failures}

    corrupt_dir = _variant(champion_dir, tmp_path / "corrupt", "corrupt")
    ok, detail = smoke_test(corrupt_dir)
    assert ok, detail
    (corrupt_dir / "model.int8.onnx").write_bytes(b"not an onnx model")
    ok, detail = smoke_test(corrupt_dir)
    assert not ok and detail


def test_register_promote_gates_an_existing_artifact_into_the_shadow_stage(world, tmp_path):
    """``models register PATH --promote``: an equal copy of the champion passes the paired gate (no
    difference on any row) and goes to the shadow alias, with its report stored."""
    from training.retrain import gate_existing

    settings, engine, champion_dir = world
    with engine.connect() as conn:
        champion = registry_sql.get_alias(conn)
    copy_dir = _variant(registry.fetch_artifact(engine, champion, tmp_path / "cache"), tmp_path / "copy", "tiny-copy")
    registry.register_artifact(engine, copy_dir)
    outcome = gate_existing(engine, settings, "tiny-copy", copy_dir, by="test")
    assert outcome.status == "shadow", outcome.reason
    with engine.connect() as conn:
        record = registry_sql.get_version(conn, "tiny-copy")
        assert registry_sql.get_alias(conn, "shadow") == "tiny-copy" and registry_sql.get_alias(conn) == champion
    assert record["status"] == "shadow" and record["report"]["passed"] is True
    assert record["report"]["comparisons"]["pooled_base"]["diff"] == 0.0


def test_warm_start_retrain_starts_from_the_champion_weights(db_url, tmp_path) -> None:
    """With retrain.warm_start and the champion's weights in the registry, the challenger is trained from the
    champion (recorded in its config and in the retrain record)."""
    from training.trainer import train

    engine = make_engine(db_url)
    try:
        settings = load_settings(home=tmp_path, retrain={**_settings(tmp_path).retrain.model_dump(),
                                                         "warm_start": True, "registry_include_weights": True})
        champion_dir = train(TrainConfig(data_path=settings.data_path, output_dir=tmp_path / "champion",
                                         version="warm-champion", **TINY), progress=False)
        registry.register_artifact(engine, champion_dir, slim=False)
        registry.promote(engine, "warm-champion", by="test")
        outcome = run_retrain(engine, settings, by="test", train_overrides=dict(TINY, version="warm-challenger"))
        assert outcome.status in {"shadow", "rejected"}, outcome.reason
        with engine.connect() as conn:
            record = registry_sql.get_version(conn, "warm-challenger")
        assert record["training_config"]["retrain"]["warm_start"] is True
        assert Path(record["training_config"]["config"]["init_from"]).name.startswith("warm-champion-")  # cache: version-sha
    finally:
        engine.dispose()


@pytest.mark.parametrize(("change", "reason"), [({"seed": 99}, "seed=99"), ({"split_method": "exact"}, "split_method"),
                                                ({"select_fraction": 0.0}, "select_fraction=0")])
def test_register_promote_refuses_a_challenger_split_otherwise(world, tmp_path, change, reason):
    """A run with another seed (a sweep) trained on ~80 % of the champion's dev rows, and one with
    select_fraction=0 chose its epoch on them: before, `models register --promote` gated it on those rows
    (run_retrain refused the same settings for its own challengers)."""
    from training.retrain import gate_existing

    settings, engine, _ = world
    with engine.connect() as conn:
        champion = registry_sql.get_alias(conn)
    version = "tiny-split-" + "-".join(f"{k}" for k in change)
    copy_dir = _variant(registry.fetch_artifact(engine, champion, tmp_path / "cache"), tmp_path / "copy", version)
    config = json.loads((copy_dir / "training_config.json").read_text())
    config["config"].update(change)
    (copy_dir / "training_config.json").write_text(json.dumps(config))
    registry.register_artifact(engine, copy_dir)
    outcome = gate_existing(engine, settings, version, copy_dir, by="test")
    assert outcome.status == "failed" and reason in outcome.reason, outcome.reason
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == champion and registry_sql.get_alias(conn, "shadow") != version


def test_register_promote_refuses_a_challenger_trained_on_other_versions_of_the_data_files(world, tmp_path):
    """Same seed, split method and limit, but trained on another version of a data file (a row added: the seeded
    shuffle then moves most dev rows into train). Before, `models register --promote` gated it on the rows it had
    trained on, as if unseen; a copy of the champion recording the same files still passes (the test above)."""
    from training.retrain import gate_existing

    settings, engine, _ = world
    with engine.connect() as conn:
        champion = registry_sql.get_alias(conn)
    copy_dir = _variant(registry.fetch_artifact(engine, champion, tmp_path / "cache"), tmp_path / "copy", "tiny-data")
    config = json.loads((copy_dir / "training_config.json").read_text())
    assert "twitter_financial_news_topic/train.csv" in config["data_fingerprints"]
    config["data_fingerprints"]["twitter_financial_news_topic/train.csv"] = "sha256:" + "1" * 64
    (copy_dir / "training_config.json").write_text(json.dumps(config))
    registry.register_artifact(engine, copy_dir)
    outcome = gate_existing(engine, settings, "tiny-data", copy_dir, by="test")
    assert outcome.status == "failed" and "twitter_financial_news_topic/train.csv" in outcome.reason, outcome.reason
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == champion and registry_sql.get_alias(conn, "shadow") != "tiny-data"


def test_register_promote_rejects_a_challenger_that_cannot_load(world, tmp_path):
    """The gate's smoke test turns a model that cannot load into a verdict; the loader ran first and raised,
    so there was no report and no rejection (and a scheduled retrain crashed the same way every time)."""
    from training.retrain import gate_existing

    settings, engine, _ = world
    with engine.connect() as conn:
        champion = registry_sql.get_alias(conn)
    copy_dir = _variant(registry.fetch_artifact(engine, champion, tmp_path / "cache"), tmp_path / "copy", "tiny-junk")
    (copy_dir / "model.int8.onnx").write_bytes(b"not an onnx model")
    registry.register_artifact(engine, copy_dir)
    outcome = gate_existing(engine, settings, "tiny-junk", copy_dir, by="test")
    assert outcome.status == "rejected" and "smoke_test" in outcome.reason, outcome.reason
    with engine.connect() as conn:
        record = registry_sql.get_version(conn, "tiny-junk")
    assert record["status"] == "rejected" and record["report"]["passed"] is False


def test_a_lock_connection_lost_during_a_retrain_does_not_turn_its_outcome_into_a_crash(db_url):
    """A PostgreSQL restart or failover during an hour-long training run kills the lock's idle connection; the
    retrain carries on with fresh connections and may promote. Releasing the lock it no longer holds (the server
    freed it with the session) must not raise over that outcome, and the next retrain takes the lock again."""
    from training.retrain import retrain_lock

    engine = make_engine(db_url)
    try:
        outcome = None
        with retrain_lock(engine) as acquired:
            assert acquired
            with engine.connect() as conn:
                killed = conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").scalar_one()
            assert killed == 1
            outcome = "promoted"
        assert outcome == "promoted"
        with retrain_lock(engine) as again:
            assert again
    finally:
        engine.dispose()
