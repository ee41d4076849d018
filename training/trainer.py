"""Multi-task fine-tuning: one encoder, a sentiment head and a topic head, trained on every labeled set.

A row labeled for one task contributes nothing to the other head's loss (masked). Texts are encoded by the
serving ``TextEncoder`` with the configured ``models.preprocess`` version (identical token ids in training
and serving). Each epoch draws rows by explicit per-source sampling weights, in length buckets so padding
stays small on CPU; per-head loss weights; optional distillation from a teacher's cached soft labels and
optional LoRA adapters (merged before export). AdamW with linear warmup and decay; early stopping and
temperature calibration on the *selection* split (never the reported dev split), checkpoint score = dev
macro-F1 weighted by set size; bf16/fp16 autocast and gradient accumulation on CUDA; a resume-safe
checkpoint per epoch holding every RNG state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from tqdm.auto import tqdm

from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from models.network import MultiTaskClassifier, build_from_pretrained, default_base_encoder
from models.preprocess import IDENTITY, preprocess_all
from models.text_encoder import TextEncoder
from training.calibration import cross_fitted, fit_temperature, reliability, softmax
from training.config import TrainConfig
from training.dapt import check_dapt_splits
from training.datasets import (
    LabeledExample,
    Splits,
    add_corrections,
    examples_fingerprint,
    load_labeled_sets,
    load_unlabeled,
    near_duplicate_key,
)
from training.distill import SoftLabels, teacher_soft_labels
from training.evaluation import split_by_task, task_metrics
from training.loss import IGNORE, masked_multitask_loss, student_loss
from training.optim import weight_decay_groups
from training.vocab import add_tokens, plan_added_tokens

log = structlog.get_logger(__name__)
CHECKPOINT_DIR = "checkpoints"


@dataclass
class EncodedSet:
    """Token ids (unpadded) and label/weight arrays of a list of examples."""

    ids: list[list[int]]
    sentiment: np.ndarray
    topic: np.ndarray
    weight: np.ndarray
    sources: list[str] = field(default_factory=list)
    teacher_sentiment: np.ndarray | None = None  # teacher logits (rows without a teacher: zeros)
    teacher_topic: np.ndarray | None = None
    has_teacher: np.ndarray | None = None

    @classmethod
    def build(cls, encoder: TextEncoder, examples: Sequence[LabeledExample]) -> EncodedSet:
        """Encode with the serving encoder (preprocessing + tokenizer + truncation of the artifact)."""
        return cls(
            ids=encoder.encode([ex.text for ex in examples]),
            sentiment=np.array([IGNORE if ex.sentiment is None else ex.sentiment for ex in examples], dtype=np.int64),
            topic=np.array([IGNORE if ex.topic is None else ex.topic for ex in examples], dtype=np.int64),
            weight=np.array([ex.weight for ex in examples], dtype=np.float32),
            sources=[ex.source for ex in examples],
        )

    def subset(self, rows: Sequence[int] | np.ndarray) -> EncodedSet:
        """The rows ``rows`` (in that order), teacher logits included."""
        rows = np.asarray(rows, dtype=np.int64)

        def take(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[rows]

        return EncodedSet(ids=[self.ids[i] for i in rows], sentiment=self.sentiment[rows], topic=self.topic[rows],
                          weight=self.weight[rows], sources=[self.sources[i] for i in rows] if self.sources else [],
                          teacher_sentiment=take(self.teacher_sentiment), teacher_topic=take(self.teacher_topic),
                          has_teacher=take(self.has_teacher))


def teaching_rows(encoded: EncodedSet, use_kd: bool) -> np.ndarray:
    """Indices of the rows that teach something: a gold label for some head, or teacher logits when KD is on.

    Why: an unlabeled transfer row without a teacher (``--kd-alpha 0``, or a soft-label file that lacks its text)
    adds nothing to the loss; left in, it inflates the epoch and its schedule, and a batch made only of such rows
    has no loss to backpropagate. Without them ``--kd-alpha 0`` trains exactly the rows of the no-teacher run."""
    signal = (encoded.sentiment != IGNORE) | (encoded.topic != IGNORE)
    if use_kd and encoded.has_teacher is not None:
        signal = signal | encoded.has_teacher.astype(bool)
    return np.flatnonzero(signal)


@dataclass
class History:
    """What the training curve and card show; saved inside every checkpoint."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort within chunks of 50 batches by length, cut batches, shuffle batches: little padding."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def epoch_rows(sources: Sequence[str], weights: dict[str, float], rng: random.Random) -> list[int]:
    """Row indices of one epoch: each row of source s appears floor(w_s) times plus once more with
    probability frac(w_s) (w_s = ``weights.get(s, 1.0)``), so a source's share of the epoch is explicit."""
    rows: list[int] = []
    for i, source in enumerate(sources):
        w = weights.get(source, 1.0)
        copies = int(w) + (1 if rng.random() < w - int(w) else 0)
        rows.extend([i] * copies)
    return rows


def collate(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of the batch (not to max_length)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def select_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


@torch.inference_mode()
def predict_logits(
    model: MultiTaskClassifier, encoded: EncodedSet, pad_id: int, device: torch.device, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Sentiment and topic logits for every row, in input order (length-sorted internally)."""
    model.eval()
    order = sorted(range(len(encoded.ids)), key=lambda i: len(encoded.ids[i]))
    sentiment = np.zeros((len(order), len(SENTIMENT_LABELS)), dtype=np.float32)
    topic = np.zeros((len(order), len(TOPIC_LABELS)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = collate([encoded.ids[i] for i in idx], pad_id)
        s_logits, t_logits = model(input_ids.to(device), mask.to(device))
        sentiment[idx] = s_logits.float().cpu().numpy()
        topic[idx] = t_logits.float().cpu().numpy()
    return sentiment, topic


def set_task(enc: EncodedSet) -> str:
    return "sentiment" if (enc.sentiment != IGNORE).any() else "topic"


def evaluate_sets(
    model: MultiTaskClassifier, sets: dict[str, EncodedSet], pad_id: int, device: torch.device
) -> dict[str, dict[str, Any]]:
    """Metrics per set (each set is labeled for one task)."""
    results: dict[str, dict[str, Any]] = {}
    for name, enc in sets.items():
        sentiment, topic = predict_logits(model, enc, pad_id, device)
        if set_task(enc) == "sentiment":
            results[name] = task_metrics("sentiment", enc.sentiment.tolist(), sentiment.argmax(1).tolist())
        else:
            results[name] = task_metrics("topic", enc.topic.tolist(), topic.argmax(1).tolist())
    return results


def trained_heads(examples: Sequence[LabeledExample], source_weights: dict[str, float],
                  head_weights: dict[str, float], kd_heads: Sequence[str] = ()) -> set[str]:
    """Heads that receive a gradient: some row labeled for it is sampled (source weight > 0) and its loss weight is
    > 0, or it is distilled (``kd_heads``, only when a teacher is used).

    Why: a head that is never trained (e.g. a sentiment-only teacher, ``--source-weight tweet_topic=0``) scores
    noise on its selection sets, and that noise must not choose the epoch.
    """
    heads = set(split_by_task([ex for ex in examples if source_weights.get(ex.source, 1.0) > 0])) | set(kd_heads)
    return {h for h in heads if head_weights.get(h, 1.0) > 0}


def selection_score(metrics: dict[str, dict[str, Any]], weighting: str = "size") -> float:
    """Macro-F1 over sets, weighted by set size (``size``: a 176-row set counts 176/1,700 of a 1,700-row one)
    or plainly averaged (``mean``)."""
    if not metrics:
        return 0.0
    f1 = np.array([m["macro_f1"] for m in metrics.values()], dtype=float)
    if weighting == "mean":
        return float(f1.mean())
    n = np.array([m["n"] for m in metrics.values()], dtype=float)
    return float((f1 * n).sum() / max(n.sum(), 1.0))


def mean_macro_f1(dev_metrics: dict[str, dict[str, Any]]) -> float:
    return float(np.mean([m["macro_f1"] for m in dev_metrics.values()])) if dev_metrics else 0.0


def calibrate_head(fit: tuple[np.ndarray, np.ndarray] | None, report: tuple[np.ndarray, np.ndarray] | None, *,
                   same_rows: bool) -> tuple[float, dict[str, Any] | None, dict[str, Any] | None]:
    """(temperature, reliability before, after) of one head: fitted on ``fit`` (logits, labels), judged on
    ``report``. ``same_rows`` (no selection split, so the fit rows are the reported dev rows): the "after" is
    cross-fitted (``training.calibration.cross_fitted``), or the card's ECE after would judge its own fit."""
    if same_rows and report is not None:
        folded = cross_fitted(*report)
        return folded["temperature"], folded["before"], folded["after"]
    temperature = fit_temperature(*fit) if fit is not None else 1.0
    if report is None:
        return temperature, None, None
    logits, labels = report
    return temperature, reliability(softmax(logits), labels), reliability(softmax(logits, temperature), labels)


def calibrate(
    model: MultiTaskClassifier, select: dict[str, EncodedSet], dev: dict[str, EncodedSet], pad_id: int,
    device: torch.device, *, same_rows: bool = False,
) -> dict[str, Any]:
    """One temperature per head fitted (NLL) on the selection sets; ECE on the dev sets before and after
    (cross-fitted when ``same_rows``: the selection sets are the dev sets, see :func:`calibrate_head`)."""
    def gather(sets: dict[str, EncodedSet]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out: dict[str, list] = {"sentiment": [[], []], "topic": [[], []]}
        for enc in sets.values():
            s, t = predict_logits(model, enc, pad_id, device)
            head = set_task(enc)
            out[head][0].append(s if head == "sentiment" else t)
            out[head][1].append(enc.sentiment if head == "sentiment" else enc.topic)
        return {h: (np.concatenate(v[0]), np.concatenate(v[1])) for h, v in out.items() if v[0]}

    fit_on, report_on = gather(select), gather(dev)
    result: dict[str, Any] = {"temperatures": {}, "ece": {}, "curves": {}}
    for head in ("sentiment", "topic"):
        temperature, before, after = calibrate_head(fit_on.get(head), report_on.get(head), same_rows=same_rows)
        result["temperatures"][head] = round(temperature, 4)
        if before is not None and after is not None:
            result["ece"][head] = {"before": before["ece"], "after": after["ece"], "n": before["n"],
                                   **({"after_cross_fitted": True} if same_rows else {})}
            result["curves"][head] = {"raw softmax": before, f"T={temperature:.2f}": after}
    return result


def _apply_limits(config: TrainConfig, splits: Splits) -> list[LabeledExample]:
    held_out = [ex for sets in (splits.dev, splits.select) for exs in sets.values() for ex in exs]
    train = add_corrections(splits.train, config.extra_examples, held_out)
    if config.shuffle_labels:
        rng = random.Random(config.seed + 1)
        # Keep which head each row labels; replace the class by a uniformly random one.
        train = [
            LabeledExample(
                ex.text,
                None if ex.sentiment is None else rng.randrange(len(SENTIMENT_LABELS)),
                None if ex.topic is None else rng.randrange(len(TOPIC_LABELS)),
                ex.weight,
                ex.source,
            )
            for ex in train
        ]
    if config.label_noise:
        rng = random.Random(config.training_seed + 2)
        train = [replace(ex, sentiment=_random_class(ex.sentiment, len(SENTIMENT_LABELS), rng, config.label_noise),
                         topic=_random_class(ex.topic, len(TOPIC_LABELS), rng, config.label_noise)) for ex in train]
    return train


def _random_class(label: int | None, classes: int, rng: random.Random, share: float) -> int | None:
    """With probability ``share`` another class than ``label``, uniformly."""
    if label is None or rng.random() >= share:
        return label
    return (label + 1 + rng.randrange(classes - 1)) % classes


def _warm_start(artifact_dir: Path, config: TrainConfig) -> tuple[Any, Any]:
    """Tokenizer (added tokens included) and network, heads too, of a trained artifact, ready to train on."""
    from transformers import AutoTokenizer

    from models.artifact import TOKENIZER_DIR, read_info
    from models.labels import label_maps
    from models.torch_backend import load_torch_model

    info = read_info(artifact_dir)
    if info.preprocessing != config.preprocessing:
        raise ValueError(f"--init-from {artifact_dir} was trained with preprocessing {info.preprocessing!r}, this run "
                         f"uses {config.preprocessing!r}: the tokens would not match")
    if info.labels != label_maps():
        raise ValueError(f"--init-from {artifact_dir} has other label maps than this code")
    tokenizer = AutoTokenizer.from_pretrained(str(artifact_dir / TOKENIZER_DIR), local_files_only=True)
    return tokenizer, load_torch_model(artifact_dir, info).train()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextmanager
def _random_state_kept() -> Iterator[None]:
    """Run a block without moving the Python, NumPy or torch random streams of the training run.

    Why: scoring a teacher builds its model (random head init before its weights load); without this a student
    distilled while its teacher scored differs from the same run whose soft labels come from the cache or a file."""
    state = _rng_state()
    try:
        yield
    finally:
        _restore_rng(state)


class ResumeError(ValueError):
    """The checkpoint in --out was written by a run with other training settings: resuming would mix two runs."""


# Config fields that do not shape the weights a run trains: where it writes and under which name, how fast and on
# what it runs, what is exported or fitted after training, provenance notes. Inputs named by a path (data folder,
# teacher or soft-label file, cache folder) stand in the hash by what they hold (the fingerprints), not by path.
RESUME_IGNORED_SETTINGS = frozenset({
    "output_dir", "version", "parent_version", "threads", "device", "export_onnx", "fp16_copy", "calibrate",
    "soft_label_cache", "feedback_snapshot", "data_path", "teacher", "soft_labels", "topic_teacher",
    "topic_soft_labels", "extra_examples", "exclude_texts",
})


def training_settings(config: TrainConfig, data_fingerprints: dict[str, str], train_fingerprint: str,
                      distillation: dict[str, Any] | None) -> dict[str, Any]:
    """The settings that shape the trained weights, JSON-normalised: the config record less
    ``RESUME_IGNORED_SETTINGS``, plus fingerprints of the data files, the train rows (corrections, label noise
    included), the feedback hold-out and the teachers' soft labels (teacher, runtime and transfer texts)."""
    settings: dict[str, Any] = {k: v for k, v in config.to_record().items() if k not in RESUME_IGNORED_SETTINGS}
    settings["extra_examples"] = examples_fingerprint(config.extra_examples) if config.extra_examples else None
    settings["exclude_texts"] = ("sha256:" + hashlib.sha256("\x1e".join(sorted(set(config.exclude_texts))).encode())
                                 .hexdigest()) if config.exclude_texts else None
    settings["data_fingerprints"] = dict(sorted(data_fingerprints.items()))
    settings["train_examples"] = train_fingerprint
    teachers = None
    if distillation is not None:
        teachers = {"teacher": distillation.get("fingerprint"),
                    "topic_teacher": (distillation.get("topic_teacher") or {}).get("fingerprint")}
    settings["soft_labels"] = teachers
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def settings_sha256(settings: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def check_resumable(ckpt: dict[str, Any], settings: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint written under other training settings, naming the fields that differ; one written
    before checkpoints recorded their settings resumes with a warning (it cannot be checked)."""
    recorded = ckpt.get("settings_sha256")
    if recorded is None:
        log.warning("training.resume_unchecked", checkpoint=str(path),
                    detail="the checkpoint predates recorded settings: it is assumed to belong to this run")
        return
    if recorded == settings_sha256(settings):
        return
    old = ckpt.get("settings") or {}
    differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {settings.get(k)!r})" for k in differ[:6])
    raise ResumeError(f"{path} was written by a run with other settings: {shown or 'unknown fields'}"
                      f"{' ...' if len(differ) > 6 else ''}. Resume with that run's settings, or train into another "
                      f"--out (or delete {path.parent} to start over)")


def _latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = sorted((output_dir / CHECKPOINT_DIR).glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def default_version(fingerprint: str) -> str:
    return "mm-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + fingerprint.split(":")[-1][:8]


def _transfer_set(config: TrainConfig, splits: Splits, train_examples: list[LabeledExample]) -> tuple[list[LabeledExample], dict[str, str]]:
    """Unlabeled in-domain texts (distillation only), none near-duplicating a dev, select or train text."""
    if not config.distilled or not config.unlabeled_per_stream:
        return [], {}
    blocked = {near_duplicate_key(ex.text) for sets in (splits.dev, splits.select) for exs in sets.values() for ex in exs}
    blocked |= {near_duplicate_key(ex.text) for ex in train_examples}
    blocked |= {near_duplicate_key(t) for t in config.exclude_texts}
    return load_unlabeled(config.data_path, config.unlabeled_per_stream, config.seed, blocked)


def _cache_record(labels: SoftLabels, path: Path, scored: int) -> dict[str, Any]:
    """Where one teacher's soft labels came from (for training_config.json and the card)."""
    return {"fingerprint": labels.fingerprint, "teacher": labels.teacher, "cache": str(path), "reused": scored == 0,
            "scored_now": scored}


def _attach_soft_labels(config: TrainConfig, train_set: EncodedSet, texts: list[str], progress: bool) -> dict[str, Any]:
    """Fill the teacher logits of ``train_set`` from the cache (computing it once per teacher).

    The first teacher (``teacher`` or its ``soft_labels`` file) gives both heads; a ``topic_teacher`` (or its
    ``topic_soft_labels`` file) replaces the topic logits. A row learns from the teachers only where every teacher
    in use has scored it. A file is refused for a head it does not carry (``SoftLabelError``)."""
    cache = Path(config.soft_label_cache or Path(config.output_dir).parent / "soft-labels")
    record: dict[str, Any] = {"alpha": config.kd_alpha, "temperature": config.kd_temperature,
                              "heads": list(config.kd_heads), "unlabeled_only": list(config.kd_unlabeled_only)}
    sentiment = np.zeros((len(texts), len(SENTIMENT_LABELS)), np.float32)
    topic = np.zeros((len(texts), len(TOPIC_LABELS)), np.float32)
    hits: list[np.ndarray] = []
    if config.teaches_both_heads:
        if config.soft_labels:
            labels, path, scored = SoftLabels.load(Path(config.soft_labels)), Path(config.soft_labels), 0
            for head in config.kd_heads:
                if head == "sentiment" or not config.has_topic_teacher:
                    labels.require(head, path)
        else:
            labels, path, scored = teacher_soft_labels(config.teacher, texts, cache, threads=config.threads,
                                                       progress=progress)
        sentiment, topic, hit = labels.lookup(texts)
        hits.append(hit)
        record.update(_cache_record(labels, path, scored))
    if config.has_topic_teacher:
        if config.topic_soft_labels:
            labels, path, scored = SoftLabels.load(Path(config.topic_soft_labels)), Path(config.topic_soft_labels), 0
            labels.require("topic", path)
        else:
            labels, path, scored = teacher_soft_labels(config.topic_teacher, texts, cache, threads=config.threads,
                                                       progress=progress)
        _, topic, hit = labels.lookup(texts)
        hits.append(hit)
        record["topic_teacher"] = _cache_record(labels, path, scored)
        if not config.teaches_both_heads:  # the topic teacher is the only one: the card names it
            record.update(record["topic_teacher"])
    train_set.teacher_sentiment, train_set.teacher_topic = sentiment, topic
    train_set.has_teacher = np.logical_and.reduce(hits)
    record["rows_with_teacher"] = int(train_set.has_teacher.sum())
    return record


def train(
    config: TrainConfig, *, resume: bool = False, progress: bool = True, on_epoch: Callable[[dict], None] | None = None
) -> Path:
    """Fine-tune, then write a complete artifact (weights, int8 ONNX, card, plots) to ``config.output_dir``."""
    from transformers import AutoTokenizer

    _seed_everything(config.training_seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = select_device(config.device)
    base = Path(config.base_encoder) if config.base_encoder else default_base_encoder()
    if not config.init_from:  # an adapted encoder (marketmood dapt) read no text of its own splits' dev rows
        check_dapt_splits(base, config.seed, config.split_method, config.select_fraction)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    splits = load_labeled_sets(config.data_path, seed=config.seed, limit_per_dataset=config.limit_per_dataset,
                               exclude_texts=config.exclude_texts, split_method=config.split_method,
                               select_fraction=config.select_fraction)
    train_examples = _apply_limits(config, splits)
    fingerprints = dict(splits.fingerprints)
    if config.extra_examples:
        fingerprints["extra_examples"] = examples_fingerprint(config.extra_examples)
    data_fingerprint = examples_fingerprint(train_examples)
    transfer, transfer_fps = _transfer_set(config, splits, train_examples)
    fingerprints.update(transfer_fps)
    version = config.version or default_version(data_fingerprint)
    selection_sets = splits.select if any(splits.select.values()) else splits.dev
    log.info("training.start", version=version, train=len(train_examples), transfer=len(transfer), device=str(device),
             dev={k: len(v) for k, v in splits.dev.items()}, select={k: len(v) for k, v in splits.select.items()},
             base=str(base), lora=config.lora)

    if config.init_from:
        tokenizer, model = _warm_start(Path(config.init_from), config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        model = build_from_pretrained(base, len(SENTIMENT_LABELS), len(TOPIC_LABELS))
    added: dict[str, list[int]] = {}
    use_kd = config.distilled and config.kd_alpha > 0  # soft labels join the loss; transfer rows teach only so
    if config.preprocessing != IDENTITY and config.max_added_tokens and not config.init_from:
        vocab_texts = preprocess_all([ex.text for ex in train_examples + (transfer if use_kd else [])],
                                     config.preprocessing)
        added = add_tokens(tokenizer, model, plan_added_tokens(tokenizer, vocab_texts, config.cashtag_min_count,
                                                               config.max_added_tokens))
    encoder = TextEncoder.from_tokenizer(tokenizer.backend_tokenizer, config.max_length, config.preprocessing)
    pad_id = encoder.pad_id
    train_set = EncodedSet.build(encoder, train_examples + transfer)
    distillation: dict[str, Any] | None = None
    if config.distilled:
        with _random_state_kept():
            distillation = _attach_soft_labels(config, train_set, [ex.text for ex in train_examples + transfer],
                                               progress)
        distillation["transfer_texts"] = len(transfer)
    dev_sets = {name: EncodedSet.build(encoder, exs) for name, exs in splits.dev.items() if exs}
    keep = teaching_rows(train_set, use_kd)
    if len(keep) < len(train_set.ids):
        log.info("training.rows_left_out", rows=len(train_set.ids) - len(keep), kd=use_kd,
                 detail="neither a gold label nor (with KD on) teacher logits")
        train_set = train_set.subset(keep)
    if distillation is not None:
        distillation["rows_left_out"] = len(train_examples) + len(transfer) - len(keep)
    settings = training_settings(config, fingerprints, data_fingerprint, distillation)
    heads = trained_heads(train_examples, config.source_weights, config.head_weights, config.kd_heads if use_kd else ())
    select_sets = {name: EncodedSet.build(encoder, exs) for name, exs in selection_sets.items()
                   if set(split_by_task(exs)) & heads}

    model.dropout.p = config.dropout
    lora_params: dict[str, int] | None = None
    if config.lora:
        from training.lora import apply_lora  # peft (and accelerate) only when LoRA is asked for

        lora_params = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout)
    model.to(device)
    optimizer = torch.optim.AdamW(weight_decay_groups(model.named_parameters(), config.weight_decay), lr=config.lr)
    expected_rows = sum(config.source_weights.get(src, 1.0) for src in train_set.sources)
    steps_per_epoch = math.ceil(math.ceil(expected_rows / config.batch_size) / config.grad_accum_steps)
    total_steps = max(1, steps_per_epoch * config.epochs)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    warmup = max(1, int(total_steps * config.warmup_ratio))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    history = History()
    start_epoch, step = 0, 0
    best_score, best_state, best_epoch, stale = -1.0, None, -1, 0
    if resume and (ckpt_path := _latest_checkpoint(output_dir)):
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        check_resumable(ckpt, settings, ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history = ckpt["history"]
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
        best_score, best_epoch, stale = ckpt["best_score"], ckpt["best_epoch"], ckpt["stale"]
        best_state = ckpt["best_state"]
        if ckpt.get("scaler"):  # fp16 on a GPU without bf16: the loss scale it had learnt, not a fresh 65536
            scaler.load_state_dict(ckpt["scaler"])
        _restore_rng(ckpt)
        log.info("training.resume", checkpoint=str(ckpt_path), epoch=start_epoch)

    if stale > config.patience:  # resumed from a run that had already stopped early: nothing left to train
        start_epoch = config.epochs
    started = time.monotonic()
    for epoch in range(start_epoch, config.epochs):
        if config.max_steps and step >= config.max_steps:
            break
        model.train()
        rng = random.Random(config.training_seed * 1000 + epoch)
        rows = epoch_rows(train_set.sources, config.source_weights, rng)
        batches = [[rows[p] for p in b] for b in length_bucketed_batches([len(train_set.ids[r]) for r in rows],
                                                                          config.batch_size, rng)]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, unit="batch")
        running = 0.0
        optimizer.zero_grad(set_to_none=True)
        for i, idx in enumerate(bar):
            input_ids, mask = collate([train_set.ids[j] for j in idx], pad_id)
            labels = {"sentiment": torch.from_numpy(train_set.sentiment[idx]).to(device),
                      "topic": torch.from_numpy(train_set.topic[idx]).to(device)}
            weights = torch.from_numpy(train_set.weight[idx]).to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                s_logits, t_logits = model(input_ids.to(device), mask.to(device))
            teacher = has_teacher = None
            if use_kd:
                teacher = {"sentiment": torch.from_numpy(train_set.teacher_sentiment[idx]).to(device),
                           "topic": torch.from_numpy(train_set.teacher_topic[idx]).to(device)}
                has_teacher = torch.from_numpy(train_set.has_teacher[idx]).to(device)
            loss = student_loss({"sentiment": s_logits, "topic": t_logits}, labels, weights, teacher=teacher,
                                has_teacher=has_teacher, alpha=config.kd_alpha if use_kd else 0.0,
                                temperature=config.kd_temperature, label_smoothing=config.label_smoothing,
                                head_weights=config.head_weights, kd_heads=config.kd_heads,
                                kd_unlabeled_only=config.kd_unlabeled_only)
            scaler.scale(loss / config.grad_accum_steps).backward()
            running = 0.98 * running + 0.02 * float(loss.detach()) if i else float(loss.detach())
            if (i + 1) % config.grad_accum_steps == 0 or i + 1 == len(batches):
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % 10 == 0 or step == 1:
                    history.steps.append(step)
                    history.train_loss.append(running)
                bar.set_postfix(loss=f"{running:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if config.max_steps and step >= config.max_steps:
                    break
        bar.close()
        select_metrics = evaluate_sets(model, select_sets, pad_id, device)
        score = selection_score(select_metrics, config.selection_weighting)
        summary = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": running,
            "selection_score": score,
            "mean_dev_macro_f1": score,  # kept for older readers of history: it is the selection split's score
            "dev": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in select_metrics.items()},
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        history.epochs.append(summary)
        log.info("training.epoch", **{k: v for k, v in summary.items() if k != "dev"}, select=summary["dev"])
        if on_epoch:
            on_epoch(summary)
        if score > best_score:
            best_score, best_epoch, stale = score, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        _save_checkpoint(output_dir, model, optimizer, scheduler, history, epoch, step, best_score, best_epoch, stale,
                         best_state, scaler=scaler.state_dict() if scaler.is_enabled() else None, settings=settings)
        if stale > config.patience:
            log.info("training.early_stop", epoch=epoch + 1, best_epoch=best_epoch)
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    if config.lora:
        from training.lora import merge_lora  # peft only when LoRA is asked for

        merge_lora(model)
    model.to(device).eval()
    calibration = (calibrate(model, select_sets, dev_sets, pad_id, device, same_rows=selection_sets is splits.dev)
                   if config.calibrate else None)
    model.to("cpu").eval()
    from training.artifact_writer import write_artifact

    return write_artifact(
        model=model,
        tokenizer=tokenizer,
        config=config,
        version=version,
        base=base,
        splits=splits,
        fingerprints=fingerprints,
        data_fingerprint=data_fingerprint,
        history=history,
        best_epoch=best_epoch,
        train_size=len(train_examples),
        extras={
            "selection_split": "select" if selection_sets is splits.select else "dev",
            "select_sizes": {k: len(v) for k, v in selection_sets.items()},
            "added_tokens": {"count": len(added), "examples": sorted(added)[:20]},
            "distillation": distillation,
            "lora": lora_params,
            "calibration": calibration,
            "threads": torch.get_num_threads(),
            "train_source_sizes": {src: train_set.sources.count(src) for src in sorted(set(train_set.sources))},
        },
    )


def _rng_state() -> dict[str, Any]:
    """Every random stream a run draws from (the checkpoint keeps it; teacher scoring is fenced by it)."""
    return {
        "py_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore_rng(ckpt: dict[str, Any]) -> None:
    random.setstate(ckpt["py_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if "numpy_rng" in ckpt:
        np.random.set_state(ckpt["numpy_rng"])
    if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])


def _save_checkpoint(output_dir: Path, model, optimizer, scheduler, history, epoch, step, best_score, best_epoch, stale,
                     best_state, *, scaler: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> None:
    """Atomic per-epoch checkpoint: everything needed to resume exactly where the epoch ended (all RNG states), and
    the settings that shaped it (``training_settings``), so a resume by another run's settings is refused."""
    directory = output_dir / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch-{epoch + 1}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history,
            "epoch": epoch,
            "step": step,
            "best_score": best_score,
            "best_epoch": best_epoch,
            "stale": stale,
            "best_state": best_state,
            "scaler": scaler,  # the AMP loss scale (fp16 on CUDA only; None elsewhere)
            "settings": settings,
            "settings_sha256": settings_sha256(settings) if settings is not None else None,
            **_rng_state(),
        },
        tmp,
    )
    os.replace(tmp, path)
    for old in directory.glob("epoch-*.pt"):
        if old != path:
            old.unlink()


def history_to_json(history: History) -> dict[str, Any]:
    return {"steps": history.steps, "train_loss": history.train_loss, "epochs": history.epochs}


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


__all__ = ["train", "masked_multitask_loss", "length_bucketed_batches", "collate", "IGNORE", "ResumeError"]
