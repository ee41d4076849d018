"""End to end on a tiny slice: a real fine-tune, the gate on the CPU serving path, registry, promotion.

Two tiny trainings (a few optimizer steps on a few dozen rows per set): a deliberately bad champion trained
on shuffled labels, then ``run_retrain`` whose challenger (real labels + analyst feedback) must beat it and
be promoted; the shuffled model must then be rejected by the gate against the new champion. A second
retrain started while the first one trains must skip (advisory lock).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from marketmood.settings import load_settings
from storage import feedback as feedback_sql
from storage import registry as registry_sql
from storage.db import make_engine
from training import registry
from training.config import TrainConfig
from training.gate import evaluate_gate
from training.retrain import FEEDBACK_SET, REPORT_MD, candidate, gate_config_from, run_retrain

# Two tiny fine-tunes (each about a minute on an idle 2-core machine, far more on a loaded one).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TINY = {"limit_per_dataset": 40, "max_steps": 10, "epochs": 1, "batch_size": 16, "max_length": 32, "lr": 2e-4,
        "seed": 13, "threads": 1}


def _settings(home: Path):
    return load_settings(home=home, retrain={"limit_per_dataset": TINY["limit_per_dataset"], "epochs": 1,
                                             "feedback_holdout_fraction": 0.25, "macro_f1_tolerance": 0.005})


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
    """A shared database with a shuffled-label champion and analyst feedback."""
    from training.trainer import train

    home = tmp_path_factory.mktemp("retrain-home")
    settings = _settings(home)
    engine = make_engine(pg_url)
    bad_dir = train(TrainConfig(data_path=settings.data_path, output_dir=home / "bad", version="tiny-shuffled",
                                shuffle_labels=True, **TINY), progress=False)
    registry.register_artifact(engine, bad_dir, slim=True)
    registry.promote(engine, "tiny-shuffled", by="test")
    with engine.begin() as conn:
        for text, sentiment, topic in FEEDBACK:
            feedback_sql.insert_feedback(conn, article_id=None, text=text, sentiment=sentiment, topic=topic,
                                         author="analyst")
    yield settings, engine, bad_dir
    engine.dispose()


def test_retrain_promotes_a_better_challenger_and_a_concurrent_retrain_skips(world):
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
    assert outcome.status == "promoted", outcome.reason
    assert outcome.champion == "tiny-shuffled"
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == outcome.version
        record = registry_sql.get_version(conn, outcome.version)
        stored = registry_sql.get_artifact(conn, outcome.version)
    assert record["parent_version"] == "tiny-shuffled" and record["status"] == "promoted"
    report = record["report"]
    assert report["passed"] is True and report["challenger"] == outcome.version
    # Same frozen dev sets for both models, plus the time-forward feedback slice (2 newest of 8 rows).
    assert set(report["metrics"]["champion"]) == set(report["metrics"]["challenger"])
    assert {"phrasebank", "tweet_topic", FEEDBACK_SET} <= set(report["metrics"]["challenger"])
    assert report["eval_sizes"][FEEDBACK_SET] == 2 and report["feedback"]["train"] == 6
    assert "negative" in report["per_class"]["phrasebank"]["sentiment"]
    assert "# Promotion gate" in report["markdown"]
    assert record["training_config"]["retrain"]["feedback_train"] == 6
    # The stored artifact is what a worker needs: it unpacks and carries the report.
    assert stored is not None and len(stored[0]) < 40_000_000
    unpacked = registry.fetch_artifact(engine, outcome.version, Path(settings.home) / "fetch-test")
    assert (unpacked / REPORT_MD).read_text() == report["markdown"]
    assert (unpacked / "model.int8.onnx").is_file() and not (unpacked / "model.safetensors").exists()


def test_gate_rejects_the_shuffled_label_model_against_the_new_champion(world):
    settings, engine, bad_dir = world
    with engine.connect() as conn:
        champion_version = registry_sql.get_alias(conn)
    assert champion_version != "tiny-shuffled"
    champion_dir = registry.fetch_artifact(engine, champion_version, Path(settings.home) / "models")
    from training.datasets import load_labeled_sets

    sets = load_labeled_sets(settings.data_path, seed=13, limit_per_dataset=TINY["limit_per_dataset"]).dev
    texts = [ex.text for exs in sets.values() for ex in exs[:16]]
    champ = candidate(champion_version, champion_dir, sets, texts, smoke=False)
    worse = candidate("tiny-shuffled", bad_dir, sets, texts, smoke=True)
    result = evaluate_gate(champ, worse, gate_config_from(settings))
    assert not result.passed
    assert any(c.name.startswith(("macro_f1", "negative_recall")) for c in result.failures)
    assert all(c.passed for c in result.checks if c.name in {"label_maps", "smoke_test", "latency"})
