"""Every option of train / evaluate / teacher fetch explains itself; bad weight pairs and filters are clear errors."""

import json

import click
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.commands.model import (
    calibrate_command,
    evaluate_command,
    teacher_fetch_command,
    teacher_share_labels_command,
    train_command,
)


def test_every_option_has_help_text():
    for command in (train_command, evaluate_command, calibrate_command, teacher_fetch_command,
                    teacher_share_labels_command):
        missing = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
        assert not missing, (command.name, missing)


def test_bad_weight_pairs_are_usage_errors(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--source-weight", "fiqa"])
    assert result.exit_code == 2 and "NAME=NUMBER" in result.output
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--head-weight", "sentiment=-1"])
    assert result.exit_code == 2 and ">= 0" in result.output


def test_misspelt_source_or_head_is_a_usage_error_not_a_silent_no_op(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--source-weight", "tweet_topics=2"])
    assert result.exit_code == 2 and "unknown source(s) ['tweet_topics']" in result.output
    assert "unlabeled:reuters" in result.output  # the message lists what is accepted
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--head-weight", "sentimnet=2"])
    assert result.exit_code == 2 and "unknown head(s) ['sentimnet']" in result.output
    assert not any(tmp_path.iterdir())  # refused before any work


def test_teacher_fetch_is_a_subcommand():
    result = CliRunner().invoke(cli, ["teacher", "fetch", "--help"])
    assert result.exit_code == 0 and "sha256" in result.output


def test_evaluate_where_scores_only_matching_rows_with_the_bundled_model(tmp_path):
    labels = tmp_path / "valid.csv"
    labels.write_text("text,label,agreement\nOperating profit rose sharply,positive,100\n"
                      "The company reported a net loss,negative,50\nThe meeting is on Tuesday,neutral,100\n")
    metrics = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["evaluate", "--labels", str(labels), "--where", "agreement=100",
                                      "--metrics-json", str(metrics)])
    assert result.exit_code == 0, result.output
    assert "(sentiment, 2 rows, agreement=100)" in result.output
    record = json.loads(metrics.read_text())
    assert record["where"] == {"agreement": "100"} and record["n"] == 2


def test_evaluate_where_errors_are_usage_errors(tmp_path):
    labels = tmp_path / "valid.csv"
    labels.write_text("text,label,agreement\nProfit rose,positive,100\n")
    result = CliRunner().invoke(cli, ["evaluate", "--labels", str(labels), "--where", "agreement"])
    assert result.exit_code == 2 and "COLUMN=VALUE" in result.output
    result = CliRunner().invoke(cli, ["evaluate", "--dev", "--where", "agreement=100"])
    assert result.exit_code == 2 and "--where filters a --labels file" in result.output
    result = CliRunner().invoke(cli, ["evaluate", "--labels", str(labels), "--where", "agreemnt=100"])
    assert result.exit_code == 1 and "no column(s) ['agreemnt']" in result.output


def test_dev_splits_of_a_limited_run_are_its_own(tiny_data, tmp_path, monkeypatch):
    """`evaluate --dev` / `calibrate` rebuild a run's dev rows from its training config: the row limit was
    ignored, so a limited run was scored on the full sets' dev rows, not its card's."""
    import json

    from marketmood.commands.model import _artifact_dev_splits
    from marketmood.settings import get_settings
    from training.datasets import load_labeled_sets

    artifact = tmp_path / "limited"
    artifact.mkdir()
    (artifact / "training_config.json").write_text(json.dumps(
        {"config": {"seed": 13, "split_method": "cluster", "limit_per_dataset": 10}, "split_method": "cluster"}))
    monkeypatch.setenv("MARKETMOOD_DATA_PATH", str(tiny_data))
    get_settings.cache_clear()
    try:
        splits, seed, method, _ = _artifact_dev_splits(artifact)
    finally:
        get_settings.cache_clear()
    expected = load_labeled_sets(tiny_data, seed=13, split_method="cluster", limit_per_dataset=10).dev
    full = load_labeled_sets(tiny_data, seed=13, split_method="cluster").dev
    assert (seed, method) == (13, "cluster")
    assert {k: [ex.text for ex in v] for k, v in splits.dev.items()} == {k: [ex.text for ex in v] for k, v in expected.items()}
    assert sum(map(len, expected.values())) < sum(map(len, full.values()))  # the limit matters on this data


def test_a_labels_row_the_model_cannot_read_is_named_not_a_traceback(tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("text,label\nStocks rally,positive\n\ufffd\ufffd,neutral\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["evaluate", "--labels", str(data)])
    assert result.exit_code == 1 and "tokenizes to no word piece" in result.output and "\ufffd" in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
