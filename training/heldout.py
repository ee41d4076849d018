"""Rows no model has seen: comparing artifacts that were trained on different splits.

Two artifacts can only be compared fairly on rows neither of them trained or chose on. The promotion gate
gets that by construction (a challenger is trained on its champion's split), but a model trained on the
pre-cluster ``exact`` split and one trained on ``cluster`` splits have different dev rows, and each has
trained on some of the other's: judged on either one's dev split, the other "wins" by what it memorised.

This module rebuilds, from an artifact's recorded training config, the near-duplicate keys of every row it
trained on or selected on, and keeps only the labeled rows whose key none of the artifacts has seen.
Keys are ``near_duplicate_key``s for every artifact (a tweet seen with another ``t.co`` link counts as
seen), whatever key its own split used, which only makes the held-out rows stricter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.datasets import (
    DATASETS,
    DatasetSpec,
    LabeledExample,
    load_labeled_sets,
    near_duplicate_key,
    read_text_label_csv,
    to_examples,
)
from training.retrain import champion_split


class UnknownTrainingRowsError(ValueError):
    """The artifact's training rows cannot be rebuilt from its record (feedback rows, unknown config)."""


def recorded_split(training_config: Mapping[str, Any]) -> dict[str, Any]:
    """Split parameters of a training run as ``load_labeled_sets`` takes them.

    Artifacts trained before near-duplicate clusters and selection splits record neither: theirs were the
    ``exact`` split with no selection split.
    """
    cfg = training_config.get("config") or {}
    if not isinstance(cfg, Mapping):
        raise UnknownTrainingRowsError("the training record has no readable config")
    if cfg.get("extra_examples"):
        raise UnknownTrainingRowsError(
            f"trained on {cfg['extra_examples']} extra (feedback) rows that are not in the data folder")
    split = champion_split(training_config)  # the one reading of seed / split method / limit (old records: exact)
    return {"seed": split["seed"], "split_method": split["split_method"] or "exact",
            "select_fraction": float(cfg.get("select_fraction") or 0.0),
            "limit_per_dataset": split.get("limit_per_dataset")}


def seen_keys(training_config: Mapping[str, Any], data_path: Path,
              specs: Sequence[DatasetSpec] = DATASETS) -> set[str]:
    """Near-duplicate keys of the rows an artifact trained on or chose epochs and temperatures on."""
    split = recorded_split(training_config)
    splits = load_labeled_sets(Path(data_path), specs=specs, **split)
    rows = list(splits.train) + [ex for exs in splits.select.values() for ex in exs]
    return {near_duplicate_key(ex.text) for ex in rows}


def all_labeled_rows(data_path: Path, specs: Sequence[DatasetSpec] = DATASETS) -> dict[str, list[LabeledExample]]:
    """Every labeled row under ``data_path`` per set: its train file plus its shipped dev file."""
    out: dict[str, list[LabeledExample]] = {}
    for spec in specs:
        rows: list[LabeledExample] = []
        for name in (spec.train_file, spec.dev_file):
            if name and (Path(data_path) / name).is_file():
                rows.extend(to_examples(read_text_label_csv(Path(data_path) / name), spec.task, spec.name))
        if rows:
            out[spec.name] = rows
    return out


def unseen_rows(sets: Mapping[str, Sequence[LabeledExample]], seen: Iterable[str]) -> dict[str, list[LabeledExample]]:
    """The rows of each set whose near-duplicate key is not in ``seen``, one row per key and set (first kept).

    One row per key: a cluster of reposts is one piece of evidence, and its members can disagree on the label.
    """
    seen = set(seen)
    out: dict[str, list[LabeledExample]] = {}
    for name, examples in sets.items():
        kept: list[LabeledExample] = []
        used: set[str] = set()
        for ex in examples:
            key = near_duplicate_key(ex.text)
            if key and key not in seen and key not in used:
                kept.append(ex)
                used.add(key)
        out[name] = kept
    return out


def rows_unseen_by(training_configs: Sequence[Mapping[str, Any]], data_path: Path,
                   specs: Sequence[DatasetSpec] = DATASETS) -> dict[str, list[LabeledExample]]:
    """Labeled rows under ``data_path`` that none of the artifacts (by their training records) has seen."""
    seen: set[str] = set()
    for record in training_configs:
        seen |= seen_keys(record, data_path, specs)
    return unseen_rows(all_labeled_rows(data_path, specs), seen)
