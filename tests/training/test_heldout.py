"""training.heldout: the rows two artifacts trained on different splits can fairly be compared on."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from training.datasets import LabeledExample, load_labeled_sets, near_duplicate_key
from training.heldout import (
    UnknownTrainingRowsError,
    all_labeled_rows,
    recorded_split,
    rows_unseen_by,
    seen_keys,
    unseen_rows,
)

EXACT_RECORD = {"config": {"seed": 13}}  # what the bundled model's record says: no split_method, no select split
CLUSTER_RECORD = {"config": {"seed": 13, "split_method": "cluster", "select_fraction": 0.2}}


def _trained_and_selected(data: Path, record: dict) -> set[str]:
    """Independently of the module: what load_labeled_sets gives that run to train and choose on."""
    split = load_labeled_sets(data, **recorded_split(record))
    return {near_duplicate_key(ex.text) for ex in split.train + [e for es in split.select.values() for e in es]}


@pytest.fixture(scope="module")
def reposted_data(tmp_path_factory) -> Path:
    """Tweets reposted with other t.co links: exact splits put twins on both sides, cluster splits do not."""
    root = tmp_path_factory.mktemp("reposts")
    path = root / "twitter_financial_news_sentiment/train.csv"
    path.parent.mkdir(parents=True)
    labels = ("Bearish", "Neutral", "Bullish")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(120):
            for link in ("a", "b", "c"):
                writer.writerow([f"$XYZ story {i} moves shares https://t.co/{link}{i}", labels[i % 3]])
    return root


def test_unseen_rows_share_no_key_with_what_either_artifact_trained_or_selected_on(tiny_data):
    unseen = rows_unseen_by([EXACT_RECORD, CLUSTER_RECORD], tiny_data)
    seen = _trained_and_selected(tiny_data, EXACT_RECORD) | _trained_and_selected(tiny_data, CLUSTER_RECORD)
    assert sum(len(v) for v in unseen.values()) > 0
    for name, rows in unseen.items():
        assert not {near_duplicate_key(ex.text) for ex in rows} & seen, name


def test_a_dev_row_whose_repost_twin_was_trained_on_is_not_unseen(reposted_data):
    # The exact split folds case and whitespace only, so each dev tweet's other-link twins sit in its train rows.
    exact_dev = load_labeled_sets(reposted_data, seed=13, split_method="exact").dev["tweet_sentiment"]
    assert exact_dev, "fixture must give the exact split dev rows"
    unseen = rows_unseen_by([EXACT_RECORD], reposted_data)
    assert unseen["tweet_sentiment"] == [], "every exact-split dev tweet has a trained twin: none is unseen"
    # A cluster split keeps twins together: its dev clusters are unseen, one row per cluster.
    unseen = rows_unseen_by([CLUSTER_RECORD], reposted_data)["tweet_sentiment"]
    keys = [near_duplicate_key(ex.text) for ex in unseen]
    assert unseen and len(keys) == len(set(keys))
    assert not set(keys) & seen_keys(CLUSTER_RECORD, reposted_data)


def test_both_artifacts_rows_are_excluded_not_just_the_first(tiny_data):
    only_exact = rows_unseen_by([EXACT_RECORD], tiny_data)
    both = rows_unseen_by([EXACT_RECORD, CLUSTER_RECORD], tiny_data)
    for name in both:
        assert {ex.text for ex in both[name]} <= {ex.text for ex in only_exact[name]}
    assert sum(map(len, both.values())) < sum(map(len, only_exact.values()))


def test_the_same_text_counts_once_per_set_but_in_each_task():
    text = "Fed raises rates, stocks fall"
    sets = {"tweet_sentiment": [LabeledExample(text, sentiment=0), LabeledExample(text + "!", sentiment=0)],
            "tweet_topic": [LabeledExample(text, topic=1)]}
    out = unseen_rows(sets, seen=[])
    assert [len(out["tweet_sentiment"]), len(out["tweet_topic"])] == [1, 1]
    assert unseen_rows(sets, seen=[near_duplicate_key(text)]) == {"tweet_sentiment": [], "tweet_topic": []}


def test_all_labeled_rows_reads_train_and_shipped_dev_files(tiny_data):
    rows = all_labeled_rows(tiny_data)
    split = load_labeled_sets(tiny_data, seed=13)
    assert {ex.text for ex in split.dev["phrasebank"]} <= {ex.text for ex in rows["phrasebank"]}
    assert set(rows) == {"phrasebank", "tweet_sentiment", "tweet_topic"}


def test_records_old_and_new_and_the_ones_that_cannot_be_rebuilt():
    assert recorded_split(EXACT_RECORD) == {"seed": 13, "split_method": "exact", "select_fraction": 0.0,
                                            "limit_per_dataset": None}
    assert recorded_split(CLUSTER_RECORD)["split_method"] == "cluster"
    with pytest.raises(UnknownTrainingRowsError, match="feedback"):
        recorded_split({"config": {"seed": 13, "extra_examples": 12}})
    with pytest.raises(UnknownTrainingRowsError):
        recorded_split({"config": "TrainConfig(...)"})
