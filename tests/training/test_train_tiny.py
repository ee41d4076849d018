"""A few real optimizer steps on the tiny data folder produce a complete, loadable artifact."""

import json

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from models import load_engine
from models.artifact import CARD_FILE, METRICS_FILE, ONNX_INT8_FILE, TRAINING_CONFIG_FILE, WEIGHTS_FILE, read_info
from models.labels import label_maps
from training.config import TrainConfig
from training.datasets import LabeledExample
from training.trainer import train, trained_heads


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


def test_a_resumed_run_trains_the_remaining_epoch_as_an_uninterrupted_run_would(tiny_data, tmp_path):
    """Crash during epoch 2 (after epoch 1's checkpoint), resume: epoch 2 alone is trained and it ends where the
    uninterrupted run's epoch 2 did (model, optimizer, schedule and RNG states restored). The test above stops on
    max_steps before any epoch logic, so an off-by-one in the resumed epoch, or a resume that trains nothing,
    passed it."""
    def config(out):
        return TrainConfig(data_path=tiny_data, output_dir=out, epochs=2, patience=5, batch_size=16, max_length=32,
                           version="resume-test", threads=1, export_onnx=False)

    whole: list[dict] = []
    train(config(tmp_path / "whole"), progress=False, on_epoch=whole.append)

    class Crash(Exception):
        pass

    def crash_in_epoch_2(summary: dict) -> None:
        if summary["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(config(tmp_path / "cut"), progress=False, on_epoch=crash_in_epoch_2)
    assert (tmp_path / "cut" / "checkpoints" / "epoch-1.pt").is_file()
    resumed: list[dict] = []
    train(config(tmp_path / "cut"), resume=True, progress=False, on_epoch=resumed.append)
    assert [s["epoch"] for s in resumed] == [2]
    assert (resumed[0]["step"], resumed[0]["train_loss"], resumed[0]["selection_score"]) == pytest.approx(
        (whole[1]["step"], whole[1]["train_loss"], whole[1]["selection_score"]), rel=1e-6)


def test_evaluate_cli_reports_and_writes_json(tiny_artifact, tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("text,label\nAcme shares plunge after profit warning,BEARISH\nAcme to hold meeting,neutral\n")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tiny_artifact), "--labels", str(data), "--metrics-json", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "tiny-test" in result.output
    written = json.loads(out.read_text())
    assert written["task"] == "sentiment" and written["n"] == 2


def test_evaluate_cli_rejects_unknown_labels(tiny_artifact, tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("text,label\nsomething,very good\n")
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tiny_artifact), "--labels", str(data), "--task", "sentiment"])
    assert result.exit_code != 0
    assert "very good" in result.output


def test_evaluate_cli_dev_reproduces_card_splits(tiny_artifact, tiny_data, monkeypatch, tmp_path):
    from marketmood.settings import get_settings

    monkeypatch.setenv("MARKETMOOD_DATA_PATH", str(tiny_data))
    get_settings.cache_clear()
    out = tmp_path / "dev.json"
    try:
        result = CliRunner().invoke(cli, ["evaluate", "--model", str(tiny_artifact), "--dev", "--metrics-json", str(out)])
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


def test_training_and_serving_tokenize_identically(tiny_artifact, tiny_data):
    """The ids the HF tokenizer (training's library) gives after the artifact's preprocessing are the ids the
    engine feeds the model, added cashtag tokens included."""
    from transformers import AutoTokenizer

    from models.preprocess import preprocess_all
    from training.datasets import load_labeled_sets

    info = read_info(tiny_artifact)
    assert info.preprocessing == "mm-text-v1"
    texts = [e.text for e in load_labeled_sets(tiny_data).train][:200]
    texts += ["$ACM soars 🚀 https://t.co/abc &amp; more", "Itâ€™s $GLO vs $zzzz " * 6]
    hf = AutoTokenizer.from_pretrained(str(tiny_artifact / "tokenizer"), local_files_only=True)
    want = hf(preprocess_all(texts, info.preprocessing), truncation=True, max_length=info.max_length)["input_ids"]
    for backend in ("onnx", "torch"):
        assert load_engine(tiny_artifact, backend=backend, device="cpu").preprocess(texts) == want
    tokens = hf.convert_ids_to_tokens(want[-2])
    assert "$acm" in tokens and "[url]" in tokens and "rocket" in tokens  # whole cashtag, placeholder, emoji name


def test_card_reports_intervals_calibration_and_provenance(tiny_artifact):
    card = (tiny_artifact / CARD_FILE).read_text()
    assert "95% intervals" in card and "| phrasebank | sentiment |" in card and "[" in card.split("| phrasebank |")[1]
    assert "ECE before" in card and (tiny_artifact / "reliability.png").is_file()
    record = json.loads((tiny_artifact / TRAINING_CONFIG_FILE).read_text())
    env = record["environment"]
    assert set(env["packages"]) >= {"torch", "transformers", "tokenizers", "numpy", "scikit-learn", "onnx", "onnxruntime"}
    assert env["environment_sha256"].startswith("sha256:") and env["base_weights_sha256"].startswith("sha256:")
    assert env["threads"] == 1 and "commit" in env["code"]
    assert record["selection_split"] == "select" and record["split_method"] == "cluster"
    assert "1000 resamples of near-duplicate clusters)" in card  # a cluster split's intervals resample clusters
    assert "cross-fitted" not in card  # a selection split: the temperature never saw the dev rows
    assert set(record["calibration"]["temperatures"]) == {"sentiment", "topic"}
    assert read_info(tiny_artifact).temperatures == record["calibration"]["temperatures"]
    assert (tiny_artifact / "model.fp16.safetensors").is_file()


def _tiny(tiny_data, out, **kw):
    return TrainConfig(data_path=tiny_data, output_dir=out, epochs=1, max_steps=3, batch_size=16, limit_per_dataset=24,
                       max_length=32, version="repro", threads=1, export_onnx=False, **kw)


def test_a_tiny_retrain_reproduces_its_metrics_and_records_its_weights(tiny_data, tmp_path):
    import torch

    runs = []
    weights = {"source_weights": {"tweet_topic": 0.5, "phrasebank": 2.0}, "head_weights": {"sentiment": 1.0, "topic": 0.5},
               "feedback_snapshot": "sha256:feedback"}
    for name in ("a", "b"):
        out = train(_tiny(tiny_data, tmp_path / name, **weights), progress=False)
        runs.append(json.loads((out / METRICS_FILE).read_text())["dev"])
    record = json.loads((out / TRAINING_CONFIG_FILE).read_text())
    assert record["config"]["source_weights"] == weights["source_weights"]
    assert record["config"]["head_weights"]["topic"] == 0.5
    assert "tweet_topic" in record["train_source_sizes"]
    assert "sha256:feedback" in (out / CARD_FILE).read_text()
    for dev_name, paths in runs[0].items():
        for key in ("accuracy", "macro_f1"):
            assert abs(paths["fp32"][key] - runs[1][dev_name]["fp32"][key]) <= 0.002, (dev_name, key)
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "epoch-1.pt", weights_only=False)
    assert {"py_rng", "torch_rng", "numpy_rng", "cuda_rng"} <= set(ckpt)


def test_epoch_rows_follow_the_source_weights():
    import random

    from training.trainer import epoch_rows

    sources = ["a"] * 100 + ["b"] * 100 + ["c"] * 100
    rows = epoch_rows(sources, {"a": 2.0, "b": 0.0, "c": 0.5}, random.Random(0))
    counts = {s: sum(1 for r in rows if sources[r] == s) for s in "abc"}
    assert counts["a"] == 200 and counts["b"] == 0 and 30 < counts["c"] < 70


def test_calibrate_cli_writes_temperatures_the_engine_applies_without_changing_labels(
        tiny_artifact, tiny_data, monkeypatch, tmp_path):
    import shutil

    import numpy as np

    from marketmood.settings import get_settings

    artifact = tmp_path / "calibrated"
    shutil.copytree(tiny_artifact, artifact)
    monkeypatch.setenv("MARKETMOOD_DATA_PATH", str(tiny_data))
    get_settings.cache_clear()
    try:
        report = CliRunner().invoke(cli, ["calibrate", "--model", str(artifact)])
        untouched = (artifact / "artifact.json").read_text() == (tiny_artifact / "artifact.json").read_text()
        refused = CliRunner().invoke(cli, ["calibrate", "--model", str(artifact), "--write"])
        first = CliRunner().invoke(cli, ["calibrate", "--model", str(artifact), "--write", "--force"])
        second = CliRunner().invoke(cli, ["calibrate", "--model", str(artifact), "--write", "--force"])
    finally:
        get_settings.cache_clear()
    # training calibrated this artifact on its selection split: replacing that takes --force
    assert refused.exit_code == 1 and "--force" in refused.output
    assert report.exit_code == 0 and first.exit_code == 0 and second.exit_code == 0, first.output
    assert untouched and "report only" in report.output  # without --write nothing is stored
    temperatures = read_info(artifact).temperatures
    assert set(temperatures) == {"sentiment", "topic"} and all(t > 0 for t in temperatures.values())
    # fitted on raw logits each time: the second run finds the same temperatures, and the card has one section
    assert first.output.splitlines()[-1] == second.output.splitlines()[-1]
    card = (artifact / CARD_FILE).read_text()
    assert card.count("## Calibration (post hoc)") == 1 and (artifact / "reliability.png").is_file()

    texts = ["Acme shares plunge after profit warning", "Globex upgraded to buy by analysts", "Fed update number 1"]
    raw, scaled = load_engine(tiny_artifact), load_engine(artifact)
    assert scaled.temperatures == temperatures
    assert [(p.sentiment, p.topic) for p in raw.classify(texts)] == [(p.sentiment, p.topic) for p in scaled.classify(texts)]
    raw.temperatures = {"sentiment": 1.0, "topic": 1.0}
    log_p = np.log(raw.predict_proba(texts)[0])
    expected = np.exp(log_p / temperatures["sentiment"])
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scaled.predict_proba(texts)[0], expected, atol=1e-6)


def test_trained_heads_follow_sampled_rows_loss_weights_and_distillation():
    rows = [LabeledExample("a", sentiment=0, source="phrasebank"), LabeledExample("b", topic=3, source="tweet_topic")]
    assert trained_heads(rows, {}, {}) == {"sentiment", "topic"}
    assert trained_heads(rows, {"tweet_topic": 0.0}, {}) == {"sentiment"}
    assert trained_heads(rows, {}, {"sentiment": 0.0}) == {"topic"}
    assert trained_heads(rows, {"tweet_topic": 0.0}, {}, kd_heads=("topic",)) == {"sentiment", "topic"}


def test_an_untrained_head_does_not_choose_the_epoch(tiny_data, tmp_path):
    """A sentiment-only run (topic rows sampled 0 times): its untrained topic head's selection scores are noise
    and must not enter the selection score that picks the epoch (they decided the 2026-12-04 teacher's epoch)."""
    config = TrainConfig(data_path=tiny_data, output_dir=tmp_path / "sent-only", epochs=1, max_steps=2, batch_size=16,
                         max_length=32, version="sentiment-only", threads=1, export_onnx=False,
                         source_weights={"tweet_topic": 0.0})
    out = train(config, progress=False)
    epoch = json.loads((out / TRAINING_CONFIG_FILE).read_text())["history"]["epochs"][0]
    assert "tweet_topic" not in epoch["dev"] and {"phrasebank", "tweet_sentiment"} <= set(epoch["dev"])


def test_a_run_without_a_selection_split_reports_a_cross_fitted_ece(tiny_data, tmp_path):
    """select_fraction=0: the temperatures are fitted on the dev rows, so the card's "ECE after" on those same rows
    was in-sample (flattering); it is cross-fitted now, and the card says so."""
    config = TrainConfig(data_path=tiny_data, output_dir=tmp_path / "no-select", epochs=1, max_steps=2, batch_size=16,
                         max_length=32, version="no-select", threads=1, export_onnx=False, select_fraction=0.0)
    out = train(config, progress=False)
    record = json.loads((out / TRAINING_CONFIG_FILE).read_text())
    assert record["selection_split"] == "dev"
    assert record["calibration"]["ece"] and all(e["after_cross_fitted"] for e in record["calibration"]["ece"].values())
    assert "cross-fitted" in (out / CARD_FILE).read_text()
