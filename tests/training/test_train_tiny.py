"""A few real optimizer steps on the tiny data folder produce a complete, loadable artifact."""

import json

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from models import load_engine
from models.artifact import CARD_FILE, METRICS_FILE, ONNX_INT8_FILE, TRAINING_CONFIG_FILE, WEIGHTS_FILE, read_info
from models.labels import label_maps
from training.config import TrainConfig
from training.trainer import train


@pytest.fixture(scope="module")
def tiny_artifact(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact")
    config = TrainConfig(data_path=tiny_data, output_dir=out, epochs=2, max_steps=6, batch_size=16,
                         max_length=32, version="tiny-test", threads=1)
    return train(config, progress=False)


def test_artifact_has_weights_export_card_and_plots(tiny_artifact):
    for name in (WEIGHTS_FILE, ONNX_INT8_FILE, CARD_FILE, METRICS_FILE, TRAINING_CONFIG_FILE, "training_curve.png"):
        assert (tiny_artifact / name).is_file(), name
    assert list(tiny_artifact.glob("confusion_*.png"))
    info = read_info(tiny_artifact)
    assert info.version == "tiny-test" and info.labels == label_maps() and info.max_length == 32
    record = json.loads((tiny_artifact / TRAINING_CONFIG_FILE).read_text())
    assert record["config"]["max_steps"] == 6
    assert set(record["data_fingerprints"]) >= {"financial_phrasebank/train.csv", "twitter_financial_news_topic/train.csv"}
    metrics = json.loads((tiny_artifact / METRICS_FILE).read_text())
    assert set(metrics["dev"]["phrasebank"]) == {"fp32", "cpu_int8"}
    card = (tiny_artifact / CARD_FILE).read_text()
    assert "| phrasebank | sentiment |" in card and "tweet_topic" in card


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_artifact_loads_and_classifies(tiny_artifact, backend):
    engine = load_engine(tiny_artifact, backend=backend, device="cpu")
    (prediction,) = engine.classify(["Acme shares plunge after profit warning"])
    assert prediction.model_version == "tiny-test"
    assert abs(prediction.p_negative + prediction.p_neutral + prediction.p_positive - 1) < 1e-4


def test_resume_from_last_checkpoint_skips_finished_epochs(tiny_data, tmp_path):
    config = TrainConfig(data_path=tiny_data, output_dir=tmp_path, epochs=1, max_steps=2, batch_size=16,
                         max_length=32, version="resume-test", threads=1, export_onnx=False)
    train(config, progress=False)
    assert (tmp_path / "checkpoints" / "epoch-1.pt").is_file()
    epochs_seen = []
    train(config, resume=True, progress=False, on_epoch=epochs_seen.append)
    assert epochs_seen == []  # the only epoch was already done: nothing retrained
    assert read_info(tmp_path).version == "resume-test"


def test_evaluate_cli_reports_and_writes_json(tiny_artifact, tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("text,label\nAcme shares plunge after profit warning,BEARISH\nAcme to hold meeting,neutral\n")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tiny_artifact), "--data", str(data), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "tiny-test" in result.output
    written = json.loads(out.read_text())
    assert written["task"] == "sentiment" and written["n"] == 2


def test_evaluate_cli_rejects_unknown_labels(tiny_artifact, tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("text,label\nsomething,very good\n")
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tiny_artifact), "--data", str(data), "--task", "sentiment"])
    assert result.exit_code != 0
    assert "very good" in result.output


def test_evaluate_cli_dev_reproduces_card_splits(tiny_artifact, tiny_data, monkeypatch, tmp_path):
    from marketmood.settings import get_settings

    monkeypatch.setenv("MARKETMOOD_DATA_PATH", str(tiny_data))
    get_settings.cache_clear()
    out = tmp_path / "dev.json"
    try:
        result = CliRunner().invoke(cli, ["evaluate", "--model", str(tiny_artifact), "--dev", "--json", str(out)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())["dev"]
    card_metrics = json.loads((tiny_artifact / METRICS_FILE).read_text())["dev"]
    for name in ("phrasebank", "tweet_sentiment", "tweet_topic"):
        assert written[name]["accuracy"] == pytest.approx(card_metrics[name]["cpu_int8"]["accuracy"])


def test_evaluate_cli_needs_exactly_one_source(tiny_artifact):
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tiny_artifact)])
    assert result.exit_code == 2 and "exactly one" in result.output


def test_resume_after_early_stop_trains_nothing_more(tiny_data, tmp_path, monkeypatch):
    import training.trainer as trainer

    monkeypatch.setattr(trainer, "selection_score", lambda metrics, weighting="size": 0.5)  # never improves after epoch 1
    config = TrainConfig(data_path=tiny_data, output_dir=tmp_path, epochs=3, limit_per_dataset=8, batch_size=16,
                         max_length=32, version="early-stop", threads=1, export_onnx=False, patience=0)
    first = []
    train(config, progress=False, on_epoch=first.append)
    assert [e["epoch"] for e in first] == [1, 2]  # stopped early after epoch 2
    resumed = []
    train(config, resume=True, progress=False, on_epoch=resumed.append)
    assert resumed == []  # the run had stopped early: resuming must not train epoch 3
