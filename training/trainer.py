"""Multi-task fine-tuning: one encoder, a sentiment head and a topic head, trained on every labeled set.

A row labeled for one task contributes nothing to the other head's loss (masked). Batches are drawn from
length buckets so padding stays small on CPU; AdamW with linear warmup and decay; early stopping on mean
dev macro-F1; bf16/fp16 autocast and gradient accumulation on CUDA; a resume-safe checkpoint per epoch.
"""

from __future__ import annotations

import structlog
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from models.network import MultiTaskClassifier, build_from_pretrained, default_base_encoder
from training.config import TrainConfig
from training.datasets import LabeledExample, Splits, examples_fingerprint, load_labeled_sets
from training.evaluation import task_metrics

log = structlog.get_logger(__name__)
IGNORE = -100
CHECKPOINT_DIR = "checkpoints"


@dataclass
class EncodedSet:
    """Token ids (unpadded) and label/weight arrays of a list of examples."""

    ids: list[list[int]]
    sentiment: np.ndarray
    topic: np.ndarray
    weight: np.ndarray

    @classmethod
    def build(cls, tokenizer: Any, examples: Sequence[LabeledExample], max_length: int) -> EncodedSet:
        ids = tokenizer([ex.text for ex in examples], truncation=True, max_length=max_length)["input_ids"]
        return cls(
            ids=ids,
            sentiment=np.array([IGNORE if ex.sentiment is None else ex.sentiment for ex in examples], dtype=np.int64),
            topic=np.array([IGNORE if ex.topic is None else ex.topic for ex in examples], dtype=np.int64),
            weight=np.array([ex.weight for ex in examples], dtype=np.float32),
        )


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


def collate(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of the batch (not to max_length)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def masked_multitask_loss(
    sentiment_logits: torch.Tensor,
    topic_logits: torch.Tensor,
    sentiment: torch.Tensor,
    topic: torch.Tensor,
    weight: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Weighted mean of each head's cross-entropy over the rows labeled for it, summed over heads.

    Rows without a label for a head (label == IGNORE) add nothing to that head's loss or its gradient.
    """
    total = sentiment_logits.new_zeros(())
    for logits, labels in ((sentiment_logits, sentiment), (topic_logits, topic)):
        mask = labels != IGNORE
        if not bool(mask.any()):
            continue
        losses = nn.functional.cross_entropy(
            logits[mask].float(), labels[mask], reduction="none", label_smoothing=label_smoothing
        )
        w = weight[mask]
        total = total + (losses * w).sum() / w.sum().clamp(min=1e-8)
    return total


def select_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


@torch.inference_mode()
def predict_indices(
    model: MultiTaskClassifier, encoded: EncodedSet, pad_id: int, device: torch.device, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Argmax sentiment and topic for every row, in input order (length-sorted internally)."""
    model.eval()
    order = sorted(range(len(encoded.ids)), key=lambda i: len(encoded.ids[i]))
    sentiment = np.zeros(len(order), dtype=np.int64)
    topic = np.zeros(len(order), dtype=np.int64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = collate([encoded.ids[i] for i in idx], pad_id)
        s_logits, t_logits = model(input_ids.to(device), mask.to(device))
        sentiment[idx] = s_logits.argmax(-1).cpu().numpy()
        topic[idx] = t_logits.argmax(-1).cpu().numpy()
    return sentiment, topic


def evaluate_dev(
    model: MultiTaskClassifier, dev: dict[str, EncodedSet], pad_id: int, device: torch.device
) -> dict[str, dict[str, Any]]:
    """Metrics per dev set (each set is labeled for one task)."""
    results: dict[str, dict[str, Any]] = {}
    for name, enc in dev.items():
        sentiment, topic = predict_indices(model, enc, pad_id, device)
        if (enc.sentiment != IGNORE).any():
            results[name] = task_metrics("sentiment", enc.sentiment.tolist(), sentiment.tolist())
        else:
            results[name] = task_metrics("topic", enc.topic.tolist(), topic.tolist())
    return results


def mean_macro_f1(dev_metrics: dict[str, dict[str, Any]]) -> float:
    return float(np.mean([m["macro_f1"] for m in dev_metrics.values()])) if dev_metrics else 0.0


def _apply_limits(config: TrainConfig, splits: Splits) -> list[LabeledExample]:
    train = list(splits.train) + list(config.extra_examples)
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
    return train


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = sorted((output_dir / CHECKPOINT_DIR).glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def default_version(fingerprint: str) -> str:
    return "mm-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + fingerprint.split(":")[-1][:8]


def train(
    config: TrainConfig, *, resume: bool = False, progress: bool = True, on_epoch: Callable[[dict], None] | None = None
) -> Path:
    """Fine-tune, then write a complete artifact (weights, int8 ONNX, card, plots) to ``config.output_dir``."""
    from transformers import AutoTokenizer

    _seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = select_device(config.device)
    base = Path(config.base_encoder) if config.base_encoder else default_base_encoder()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    splits = load_labeled_sets(config.data_path, seed=config.seed, limit_per_dataset=config.limit_per_dataset,
                               exclude_texts=config.exclude_texts)
    train_examples = _apply_limits(config, splits)
    fingerprints = dict(splits.fingerprints)
    if config.extra_examples:
        fingerprints["extra_examples"] = examples_fingerprint(config.extra_examples)
    data_fingerprint = examples_fingerprint(train_examples)
    version = config.version or default_version(data_fingerprint)
    log.info("training.start", version=version, train=len(train_examples), device=str(device),
             dev={k: len(v) for k, v in splits.dev.items()}, base=str(base))

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    pad_id = tokenizer.pad_token_id or 0
    train_set = EncodedSet.build(tokenizer, train_examples, config.max_length)
    dev_sets = {name: EncodedSet.build(tokenizer, exs, config.max_length) for name, exs in splits.dev.items() if exs}

    model = build_from_pretrained(base, len(SENTIMENT_LABELS), len(TOPIC_LABELS))
    model.dropout.p = config.dropout
    model.to(device)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    steps_per_epoch = math.ceil(math.ceil(len(train_set.ids) / config.batch_size) / config.grad_accum_steps)
    total_steps = steps_per_epoch * config.epochs
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
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history = ckpt["history"]
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
        best_score, best_epoch, stale = ckpt["best_score"], ckpt["best_epoch"], ckpt["stale"]
        best_state = ckpt["best_state"]
        random.setstate(ckpt["py_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        log.info("training.resume", checkpoint=str(ckpt_path), epoch=start_epoch)

    if stale > config.patience:  # resumed from a run that had already stopped early: nothing left to train
        start_epoch = config.epochs
    started = time.monotonic()
    for epoch in range(start_epoch, config.epochs):
        if config.max_steps and step >= config.max_steps:
            break
        model.train()
        rng = random.Random(config.seed * 1000 + epoch)
        batches = length_bucketed_batches([len(x) for x in train_set.ids], config.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, unit="batch")
        running = 0.0
        optimizer.zero_grad(set_to_none=True)
        for i, idx in enumerate(bar):
            input_ids, mask = collate([train_set.ids[j] for j in idx], pad_id)
            labels_s = torch.from_numpy(train_set.sentiment[idx]).to(device)
            labels_t = torch.from_numpy(train_set.topic[idx]).to(device)
            weights = torch.from_numpy(train_set.weight[idx]).to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                s_logits, t_logits = model(input_ids.to(device), mask.to(device))
            loss = masked_multitask_loss(s_logits, t_logits, labels_s, labels_t, weights, config.label_smoothing)
            scaler.scale(loss / config.grad_accum_steps).backward()
            running = 0.98 * running + 0.02 * float(loss) if i else float(loss)
            if (i + 1) % config.grad_accum_steps == 0 or i + 1 == len(batches):
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
        dev_metrics = evaluate_dev(model, dev_sets, pad_id, device)
        score = mean_macro_f1(dev_metrics)
        summary = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": running,
            "mean_dev_macro_f1": score,
            "dev": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in dev_metrics.items()},
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        history.epochs.append(summary)
        log.info("training.epoch", **{k: v for k, v in summary.items() if k != "dev"}, dev=summary["dev"])
        if on_epoch:
            on_epoch(summary)
        if score > best_score:
            best_score, best_epoch, stale = score, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        _save_checkpoint(output_dir, model, optimizer, scheduler, history, epoch, step, best_score, best_epoch, stale, best_state)
        if stale > config.patience:
            log.info("training.early_stop", epoch=epoch + 1, best_epoch=best_epoch)
            break

    if best_state is not None:
        model.load_state_dict(best_state)
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
    )


def _save_checkpoint(output_dir: Path, model, optimizer, scheduler, history, epoch, step, best_score, best_epoch, stale, best_state) -> None:
    """Atomic per-epoch checkpoint: everything needed to resume exactly where the epoch ended."""
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
            "py_rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
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


__all__ = ["train", "masked_multitask_loss", "length_bucketed_batches", "collate"]
