"""Weight-space averaging ("model soup", Wortsman et al. 2022) of fine-tuned artifacts of one starting point.

Why: runs of one recipe that differ in a single choice (say, topic distillation on or off) and start from the
same pretrained encoder and the same head initialisation (same ``--init-seed``) usually stay in one basin of
the loss; the mean of their weights is one model of the same size and graph that often scores like an ensemble
of them, at no serving cost. Whether it does is measured the way every candidate is: the selection split here,
then the promotion gate (``benchmarks/bench_gate.py``) against the bundled model.

Pure part: :func:`average_state_dicts` and :func:`check_compatible`. I/O part: :func:`soup` loads the
ingredients, scores each and the average on the selection split they were chosen on, fits the temperatures
there and writes a complete artifact (int8 ONNX, card, dev metrics with intervals) like ``train`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import torch
from pydantic import ValidationError

from models.artifact import TOKENIZER_DIR, TRAINING_CONFIG_FILE, ArtifactInfo, read_info
from models.network import MultiTaskClassifier, default_base_encoder
from models.text_encoder import TextEncoder
from training.config import TrainConfig
from training.datasets import load_labeled_sets

log = structlog.get_logger(__name__)

# Settings that decide which rows land in the dev and selection splits: ingredients must agree on them, or the
# soup would be scored (and its temperature fitted) on rows one of its ingredients trained on.
SPLIT_SETTINGS = ("seed", "split_method", "select_fraction", "limit_per_dataset", "selection_weighting")


class SoupError(ValueError):
    """The ingredients cannot be averaged (different architectures, vocabularies, labels or splits)."""


@dataclass(frozen=True)
class Ingredient:
    """One trained artifact: where it is, what it says about itself, and its training record."""

    path: Path
    info: ArtifactInfo
    record: dict[str, Any]
    vocab: dict[str, int]
    tokenizer: Any = field(default=None, compare=False, repr=False)  # loaded once, reused for the average


def mixing_weights(count: int, weights: Sequence[float] | None = None) -> list[float]:
    """Normalised mixing weights: uniform by default; else one positive weight per ingredient, scaled to sum 1."""
    if weights is None or len(weights) == 0:
        return [1.0 / count] * count
    if len(weights) != count or any(w <= 0 for w in weights):
        raise SoupError(f"expected {count} positive weights (one per ingredient), got {list(weights)}")
    total = float(sum(weights))
    return [w / total for w in weights]


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]],
                        weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted mean (uniform by default) of floating-point tensors, accumulated in float64; integer buffers must
    be equal. Refuses different key sets or shapes: those are different networks, not two points of one.
    """
    if len(states) < 2:
        raise SoupError(f"a soup needs at least two ingredients, got {len(states)}")
    mix = mixing_weights(len(states), weights)
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=2):
        if set(state) != set(keys):
            missing, extra = sorted(set(keys) - set(state)), sorted(set(state) - set(keys))
            raise SoupError(f"ingredient {i} has other weights than ingredient 1 (missing {missing[:3]}, extra {extra[:3]})")
    averaged: dict[str, torch.Tensor] = {}
    for key in keys:
        tensors = [state[key] for state in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise SoupError(f"weight {key!r} has shapes {[tuple(t.shape) for t in tensors]}: not one architecture")
        if tensors[0].is_floating_point():
            total = torch.zeros(tensors[0].shape, dtype=torch.float64)
            for tensor, share in zip(tensors, mix):
                total += share * tensor.detach().to(torch.float64)
            averaged[key] = total.to(tensors[0].dtype)
        else:
            if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                raise SoupError(f"integer buffer {key!r} differs between ingredients")
            averaged[key] = tensors[0].clone()
    return averaged


def check_compatible(ingredients: Sequence[Ingredient]) -> None:
    """Same labels, preprocessing, length, base encoder (name and recorded weights hash), warm start, vocabulary and
    split settings, and no feedback hold-out."""
    first = ingredients[0]
    for other in ingredients[1:]:
        for field_name in ("labels", "preprocessing", "max_length", "base_encoder"):
            if getattr(other.info, field_name) != getattr(first.info, field_name):
                raise SoupError(f"{other.path} differs from {first.path} in {field_name}")
        _check_same_start(first, other)
        if other.vocab != first.vocab:
            raise SoupError(f"{other.path} has another tokenizer vocabulary than {first.path} (added tokens differ): "
                            "the same token id would mean different words")
        for setting in SPLIT_SETTINGS:
            if other.record["config"].get(setting) != first.record["config"].get(setting):
                raise SoupError(f"{other.path} was split with {setting}={other.record['config'].get(setting)!r}, "
                                f"{first.path} with {first.record['config'].get(setting)!r}: not the same dev rows")
        if _split_fingerprints(other.record) != _split_fingerprints(first.record):
            raise SoupError(f"{other.path} was trained on other labeled files than {first.path}")
    for ingredient in ingredients:
        if ingredient.record["config"].get("exclude_texts") or ingredient.record["config"].get("extra_examples"):
            raise SoupError(f"{ingredient.path} was trained with feedback rows, which its record does not hold: its "
                            "splits cannot be rebuilt here")


def _check_same_start(first: Ingredient, other: Ingredient) -> None:
    """Same pretrained weights, not just the same folder name (``info.base_encoder``): the recorded sha256 of the
    base weights, and the same warm start (``init_from``) where the records say. Two encoders of one name (a
    DAPT pass written over another, a re-fetched teacher) are two starting points, whose mean is no soup."""
    hashes = [(i.record.get("environment") or {}).get("base_weights_sha256") for i in (first, other)]
    if all(hashes) and hashes[0] != hashes[1]:
        raise SoupError(f"{other.path} started from other base weights than {first.path} (base_weights_sha256 "
                        f"{hashes[1]} vs {hashes[0]}), though both name the base encoder {first.info.base_encoder!r}")
    configs = [i.record.get("config") or {} for i in (first, other)]
    if all("init_from" in c for c in configs) and configs[0]["init_from"] != configs[1]["init_from"]:
        raise SoupError(f"{other.path} was warm-started from {configs[1]['init_from']!r}, {first.path} from "
                        f"{configs[0]['init_from']!r}: not one starting point")


def _split_fingerprints(record: Mapping[str, Any]) -> dict[str, str]:
    """Fingerprints of the labeled files (the splits are carved from them); transfer and teacher files may differ."""
    return {name: fp for name, fp in record.get("data_fingerprints", {}).items() if name.endswith(".csv")
            and not name.startswith("unlabeled")}


def load_ingredient(path: Path) -> Ingredient:
    """Read an artifact's info, training record and tokenizer vocabulary; it must carry fp32 torch weights."""
    from transformers import AutoTokenizer

    path = Path(path)
    record_path = path / TRAINING_CONFIG_FILE
    if not record_path.is_file():
        raise SoupError(f"{path} has no {TRAINING_CONFIG_FILE}: only artifacts written by `marketmood train` can be "
                        "averaged (their splits must be known)")
    tokenizer = AutoTokenizer.from_pretrained(str(path / TOKENIZER_DIR), local_files_only=True)
    return Ingredient(path=path, info=read_info(path), record=json.loads(record_path.read_text()),
                      vocab=dict(tokenizer.get_vocab()), tokenizer=tokenizer)


def soup(ingredient_paths: Sequence[Path], *, output_dir: Path, version: str, data_path: Path,
         threads: int | None = None, weights: Sequence[float] | None = None) -> tuple[Path, dict[str, Any]]:
    """Average the ingredients' weights (uniformly unless ``weights``) and write a complete artifact; returns it and
    the selection scores."""
    from models.torch_backend import load_torch_model
    from training.artifact_writer import write_artifact
    from training.trainer import EncodedSet, History, calibrate, evaluate_sets, selection_score

    if threads:
        torch.set_num_threads(threads)
    ingredients = [load_ingredient(p) for p in ingredient_paths]
    if len(ingredients) < 2:
        raise SoupError(f"a soup needs at least two ingredients, got {len(ingredients)}")
    mix = mixing_weights(len(ingredients), weights)
    check_compatible(ingredients)
    first = ingredients[0]
    try:
        models: list[MultiTaskClassifier] = [load_torch_model(i.path, i.info) for i in ingredients]
    except Exception as exc:  # ArtifactError: a slim artifact (int8 ONNX only) has no weights to average
        raise SoupError(str(exc)) from None
    settings = {k: v for k, v in first.record["config"].items() if k not in {"extra_examples", "exclude_texts"}}
    try:
        config = TrainConfig(**{**settings, "output_dir": Path(output_dir), "version": version,
                                "data_path": Path(data_path), "init_from": None})
    except ValidationError as exc:  # a record written by an older trainer with settings this code no longer has
        raise SoupError(f"{first.path}/{TRAINING_CONFIG_FILE} does not fit this code's training settings: {exc}") from None
    splits = load_labeled_sets(config.data_path, seed=config.seed, limit_per_dataset=config.limit_per_dataset,
                               split_method=config.split_method, select_fraction=config.select_fraction)
    if _split_fingerprints({"data_fingerprints": splits.fingerprints}) != _split_fingerprints(first.record):
        raise SoupError(f"the labeled files under {data_path} are not the ones the ingredients were trained on")
    tokenizer = first.tokenizer
    encoder = TextEncoder.from_tokenizer(tokenizer.backend_tokenizer, first.info.max_length, first.info.preprocessing)
    selection_sets = splits.select if any(splits.select.values()) else splits.dev
    select_sets = {name: EncodedSet.build(encoder, exs) for name, exs in selection_sets.items() if exs}
    dev_sets = {name: EncodedSet.build(encoder, exs) for name, exs in splits.dev.items() if exs}
    device = torch.device("cpu")

    def score(model: MultiTaskClassifier) -> tuple[float, dict[str, dict[str, Any]]]:
        metrics = evaluate_sets(model, select_sets, encoder.pad_id, device)
        return selection_score(metrics, config.selection_weighting), metrics

    scored = []
    for ingredient, model, share in zip(ingredients, models, mix):
        value, _ = score(model)
        scored.append({"path": str(ingredient.path), "version": ingredient.info.version, "weight": share,
                       "selection_score": value,
                       "best_epoch": ingredient.record.get("best_epoch"), "command": ingredient.record.get("command")})
        log.info("soup.ingredient", version=ingredient.info.version, selection_score=round(value, 4))
    soup_model = models[0]
    soup_model.load_state_dict(average_state_dicts([m.state_dict() for m in models], mix))
    soup_score, soup_metrics = score(soup_model)
    log.info("soup.average", selection_score=round(soup_score, 4),
             best_ingredient=round(max(s["selection_score"] for s in scored), 4))
    calibration = calibrate(soup_model, select_sets, dev_sets, encoder.pad_id, device) if config.calibrate else None
    summary = {"ingredients": scored, "selection_score": soup_score,
               "select": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in soup_metrics.items()}}
    artifact = write_artifact(
        model=soup_model.eval(), tokenizer=tokenizer, config=config, version=version,
        base=Path(config.base_encoder) if config.base_encoder else default_base_encoder(), splits=splits,
        fingerprints=dict(first.record.get("data_fingerprints", {})),
        data_fingerprint=first.record.get("train_examples_fingerprint", ""), history=History(),
        best_epoch=first.record.get("best_epoch"), train_size=first.record.get("train_size", 0),
        extras={"selection_split": "select" if selection_sets is splits.select else "dev",
                "select_sizes": {k: len(v) for k, v in selection_sets.items()},
                "added_tokens": first.record.get("added_tokens"), "distillation": first.record.get("distillation"),
                "calibration": calibration, "threads": torch.get_num_threads(), "soup": summary,
                "train_source_sizes": first.record.get("train_source_sizes")},
    )
    return artifact, summary
