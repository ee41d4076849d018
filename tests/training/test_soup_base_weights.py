"""Soup ingredients must start from the same pretrained weights, not merely from folders of the same name."""

from pathlib import Path

import pytest

from models.artifact import ArtifactInfo
from training.soup import Ingredient, SoupError, check_compatible


def _ingredient(name: str, base_sha: str | None, **config) -> Ingredient:
    record = {"config": {"seed": 13, "split_method": "cluster", "select_fraction": 0.1, "limit_per_dataset": None,
                         "selection_weighting": "size", **config},
              "data_fingerprints": {"financial_phrasebank/train.csv": "sha256:data"}}
    if base_sha is not None:
        record["environment"] = {"base_weights_sha256": base_sha}
    info = ArtifactInfo(version=name, base_encoder="model", max_length=64, preprocessing="mm-text-v1")
    return Ingredient(path=Path(name), info=info, record=record, vocab={"[PAD]": 0, "acme": 1})


def test_same_base_name_with_other_weights_is_refused():
    with pytest.raises(SoupError, match="other base weights"):
        check_compatible([_ingredient("a", "sha256:aaa"), _ingredient("b", "sha256:bbb")])


def test_same_weights_pass_and_an_unrecorded_hash_is_not_held_against_a_record():
    check_compatible([_ingredient("a", "sha256:aaa"), _ingredient("b", "sha256:aaa")])
    check_compatible([_ingredient("a", "sha256:aaa"), _ingredient("b", None)])  # an older record: name only


def test_other_warm_starts_are_refused():
    with pytest.raises(SoupError, match="warm-started"):
        check_compatible([_ingredient("a", "sha256:aaa", init_from="champion-1"),
                          _ingredient("b", "sha256:aaa", init_from="champion-2")])
    check_compatible([_ingredient("a", "sha256:aaa", init_from="champion-1"),
                      _ingredient("b", "sha256:aaa", init_from="champion-1")])
