"""``bench_gate.py --slice``: the subset comparison scores only the rows the condition keeps, on both artifacts,
and its paired interval sees a challenger that is worse there (the check a ship rule can name for PhraseBank's
all-agree rows, which the gate's whole-set votes cannot see)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.bench_gate import compare_on_slice
from training.datasets import DatasetError

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "default_model"
CLEAR = [("Operating profit rose sharply from the previous year", "positive"),
         ("Net sales increased by 25 percent and the margin improved", "positive"),
         ("The company swung to a record quarterly profit", "positive"),
         ("Quarterly revenue beat expectations and the dividend was raised", "positive"),
         ("The company reported a large net loss and cut its forecast", "negative"),
         ("Sales fell sharply and the firm announced layoffs", "negative"),
         ("Operating profit decreased to a loss of EUR 5 million", "negative"),
         ("The shares plunged after the profit warning", "negative")]


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slice") / "valid.csv"
    rows = [f'"{text}",{label},100' for text, label in CLEAR]
    rows += ["Profit rose a little,negative,50", "Sales were flat,positive,50"]  # outside the slice
    path.write_text("text,label,agreement\n" + "\n".join(rows) + "\n")
    return path


def test_slice_of_a_model_against_itself_scores_only_matching_rows(labels_csv):
    same = compare_on_slice(BUNDLED, BUNDLED, labels_csv, "agreement=100")
    assert same["n"] == len(CLEAR) and same["task"] == "sentiment"
    assert same["diff"] == 0 and same["disagreement"] == 0
    assert same["champion_accuracy"] == same["challenger_accuracy"] >= 0.75


def test_slice_sees_a_challenger_that_is_worse_there(labels_csv, tmp_path):
    # The same weights with negative and positive swapped in the artifact's label list: every clear row flips.
    swapped = tmp_path / "swapped"
    shutil.copytree(BUNDLED, swapped)
    info = json.loads((swapped / "artifact.json").read_text())
    info["labels"]["sentiment"] = list(reversed(info["labels"]["sentiment"]))
    (swapped / "artifact.json").write_text(json.dumps(info))
    worse = compare_on_slice(BUNDLED, swapped, labels_csv, "agreement=100")
    assert worse["challenger_accuracy"] < worse["champion_accuracy"]
    assert worse["diff"] < 0 and worse["upper"] < 0


def test_slice_errors_are_clear(labels_csv):
    with pytest.raises(DatasetError, match="COLUMN=VALUE"):
        compare_on_slice(BUNDLED, BUNDLED, labels_csv, "agreement")
    with pytest.raises(DatasetError, match="no rows"):
        compare_on_slice(BUNDLED, BUNDLED, labels_csv, "agreement=75")
