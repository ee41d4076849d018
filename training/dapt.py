"""Domain-adaptive pretraining (DAPT): a short masked-LM pass of the base encoder over unlabeled in-domain text.

Why: all-MiniLM-L6-v2 was tuned for sentence similarity on general web text; Reuters headlines and StockNet
tweets have their own vocabulary (tickers, "bps", "guidance"). A masked-LM pass over that text before
fine-tuning can move the encoder toward the domain (Gururangan et al., 2020). Whether it helps this small
model is an empirical question answered by the ablation in BENCHMARKS.md, not assumed here.

The output is a plain HF encoder folder (config, weights, tokenizer) that ``marketmood train --base-encoder``
loads like the stock one, plus ``dapt.json``: the text fingerprints, the settings and the held-out masked-LM
loss before and after (the pass is judged on texts it did not train on). Texts that near-duplicate a labeled
dev or selection row are left out, so the dev sets stay unseen even without labels.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

DAPT_RECORD = "dapt.json"


@dataclass(frozen=True)
class DaptConfig:
    """Settings of one masked-LM pass (recorded in ``dapt.json``)."""

    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    mask_probability: float = 0.15
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    heldout: int = 500  # texts kept out of training to measure the masked-LM loss before/after
    seed: int = 13
    threads: int | None = None
    preprocessing: str = "mm-text-v1"
    # The splits whose labeled dev and selection rows ``dapt_texts`` kept out (with ``seed``): recorded so that
    # ``marketmood train --base-encoder`` can refuse a run on other splits (its dev rows may be in the text).
    split_method: str = "cluster"
    select_fraction: float = 0.1


@dataclass
class DaptResult:
    output_dir: Path
    train_texts: int
    heldout_texts: int
    loss_before: float
    loss_after: float
    seconds: float
    curve: list[tuple[int, float]] = field(default_factory=list)


def split_heldout(texts: Sequence[str], heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """A seeded (train, held-out) split of distinct texts: the held-out rows judge the pass."""
    order = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(order)
    n = min(heldout, len(order) // 5)
    return order[n:], order[:n]


def dapt_texts(data_path: Path, per_stream: int, seed: int = 13, split_method: str = "cluster",
               select_fraction: float = 0.1) -> tuple[list[str], dict[str, str]]:
    """Unlabeled stream texts (train files only) minus near-duplicates of the labeled dev and selection rows of
    the splits a later ``marketmood train`` with the same seed makes; plus the files' fingerprints."""
    from training.datasets import load_labeled_sets, load_unlabeled, near_duplicate_key

    splits = load_labeled_sets(data_path, seed=seed, split_method=split_method, select_fraction=select_fraction)
    blocked = {near_duplicate_key(ex.text) for sets in (splits.dev, splits.select) for exs in sets.values()
               for ex in exs}
    rows, fingerprints = load_unlabeled(data_path, per_stream, seed, blocked)
    return [ex.text for ex in rows], fingerprints


# dapt.json written before ``split_method``/``select_fraction`` were recorded: ``dapt_texts`` always ran with these.
LEGACY_SPLIT = {"split_method": "cluster", "select_fraction": 0.1}


def dapt_split_settings(encoder_dir: Path) -> dict | None:
    """The split settings (seed, split_method, select_fraction) an adapted encoder's texts were cleaned with, from
    its ``dapt.json``; None for an encoder that is not the output of ``adapt``."""
    path = Path(encoder_dir) / DAPT_RECORD
    if not path.is_file():
        return None
    config = json.loads(path.read_text()).get("config", {})
    return {"seed": config.get("seed", DaptConfig.seed),
            "split_method": config.get("split_method", LEGACY_SPLIT["split_method"]),
            "select_fraction": config.get("select_fraction", LEGACY_SPLIT["select_fraction"])}


class DaptSplitError(ValueError):
    """A run would train on an adapted encoder that read texts near-duplicating the run's dev rows."""


def check_dapt_splits(encoder_dir: Path, seed: int, split_method: str, select_fraction: float) -> None:
    """Refuse to fine-tune an adapted encoder on splits other than the ones its masked-LM texts were cleaned of.

    Why: ``dapt_texts`` leaves out texts near-duplicating the dev and selection rows of *its* splits; a run with
    another seed or split method has other dev rows, which the encoder may then have read. A run without a
    selection split (``select_fraction`` 0) keeps the same dev rows and selects on them: allowed."""
    recorded = dapt_split_settings(encoder_dir)
    if recorded is None:
        return
    wanted = {"seed": seed, "split_method": split_method, "select_fraction": select_fraction}
    differ = [k for k in ("seed", "split_method") if recorded[k] != wanted[k]]
    if select_fraction and float(recorded["select_fraction"]) != float(select_fraction):
        differ.append("select_fraction")
    if differ:
        shown = ", ".join(f"{k}={wanted[k]!r} (adapted with {recorded[k]!r})" for k in differ)
        raise DaptSplitError(f"--base-encoder {encoder_dir} was adapted on texts cleaned of other splits' dev and "
                         f"selection rows: this run has {shown}; train with the adaptation's settings, or run "
                         "`marketmood dapt` again with this run's seed")


def placeholder_mask(text: str, offsets: Sequence[tuple[int, int]], placeholder: str) -> list[int]:
    """1 for each token lying inside an occurrence of ``placeholder`` in ``text`` (offsets = the tokenizer's
    character spans; special tokens have empty spans and are left to the tokenizer's own mask)."""
    spans = [(m.start(), m.end()) for m in re.finditer(re.escape(placeholder), text)]
    return [int(end > start and any(s <= start and end <= e for s, e in spans)) for start, end in offsets]


def masked_batch(tokenizer, collator, rows: Sequence[str], max_length: int) -> dict:
    """A masked-LM batch of ``rows``; the pieces of the ``[url]`` placeholder are never masked, like special tokens.

    Why: the base tokenizer splits ``[url]`` (``models.preprocess``'s URL placeholder) into "[", "ur", "##l", "]";
    predicting those back teaches no language and spends the masking budget on a constant, and the fine-tuning
    tokenizer makes ``[url]`` one added token anyway. Rows without the placeholder mask exactly as before."""
    from models.preprocess import URL_TOKEN

    enc = tokenizer(list(rows), truncation=True, max_length=max_length, return_offsets_mapping=True)
    examples = []
    for text, ids, offsets in zip(rows, enc["input_ids"], enc["offset_mapping"]):
        # the collator's own rule for the rest ([CLS], [SEP], [UNK], ...); it pads this mask with 1s
        special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        keep = placeholder_mask(text, offsets, URL_TOKEN) if URL_TOKEN in text else [0] * len(ids)
        examples.append({"input_ids": ids, "special_tokens_mask": [a | b for a, b in zip(special, keep)]})
    return collator(examples)


def adapt(base_dir: Path, output_dir: Path, texts: Sequence[str], config: DaptConfig,
          fingerprints: dict[str, str] | None = None, progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> DaptResult:
    """Masked-LM fine-tuning of ``base_dir``'s encoder on ``texts``; writes an encoder folder to ``output_dir``."""
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling
    from transformers import get_linear_schedule_with_warmup

    from models.preprocess import preprocess_all
    from training.optim import weight_decay_groups

    started = time.monotonic()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    train_texts, heldout_texts = split_heldout(preprocess_all(list(texts), config.preprocessing), config.heldout,
                                               config.seed)
    if not train_texts:
        raise ValueError("no unlabeled text to adapt on (check the data path and --per-stream)")
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    # The sentence-transformers checkpoint carries no MLM head: BERT's is created fresh (its decoder is tied to
    # the word embeddings, so only the small transform layer starts random).
    model = BertForMaskedLM.from_pretrained(str(base_dir), local_files_only=True)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mask_probability)

    def batches(rows: list[str], shuffle_seed: int | None) -> list[list[str]]:
        order = list(rows)
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(order)
        return [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]

    def masked(rows: list[str], generator_seed: int) -> dict:
        torch.manual_seed(generator_seed)  # the tokenizer draws nothing: the masks depend on this seed alone
        return masked_batch(tokenizer, collator, rows, config.max_length)

    def mlm_loss(batch: dict) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the masked positions; the 30k-word decoder runs on those rows only (about
        15 % of the tokens), which makes the pass ~4x cheaper than scoring every position."""
        hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        labels = batch["labels"]
        chosen = labels != -100
        n = int(chosen.sum())
        if not n:
            return hidden.sum() * 0.0, 0
        return torch.nn.functional.cross_entropy(model.cls(hidden[chosen]), labels[chosen]), n

    def heldout_loss() -> float:
        """Mean masked-LM loss on the held-out texts, with the same (seeded) masks before and after."""
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i, rows in enumerate(batches(heldout_texts, None)):
                loss, n = mlm_loss(masked(rows, 10_000 + i))
                total += float(loss) * n
                count += n
        return total / count if count else math.nan

    before = heldout_loss()
    steps_total = config.epochs * math.ceil(len(train_texts) / config.batch_size)
    optimizer = torch.optim.AdamW(weight_decay_groups(model.named_parameters(), config.weight_decay), lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps_total), steps_total)
    curve: list[tuple[int, float]] = []
    step, running = 0, None
    for epoch in range(config.epochs):
        model.train()
        bar = tqdm(batches(train_texts, config.seed * 1000 + epoch), desc=f"dapt epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, unit="batch")
        for rows in bar:
            loss, _ = mlm_loss(masked(rows, config.seed * 1_000_003 + step))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            if step % 10 == 0 or step == 1:
                curve.append((step, round(running, 4)))
                bar.set_postfix(loss=f"{running:.3f}")
                if on_step:
                    on_step(step, running)
    after = heldout_loss()

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.bert.save_pretrained(str(output_dir))  # the encoder only: what --base-encoder loads
    tokenizer.save_pretrained(str(output_dir))
    result = DaptResult(output_dir, len(train_texts), len(heldout_texts), round(before, 4), round(after, 4),
                        round(time.monotonic() - started, 1), curve)
    record = {"base_encoder": str(base_dir), "config": asdict(config), "data_fingerprints": fingerprints or {},
              "train_texts": result.train_texts, "heldout_texts": result.heldout_texts,
              "heldout_mlm_loss": {"before": result.loss_before, "after": result.loss_after},
              "seconds": result.seconds, "curve": curve}
    (output_dir / DAPT_RECORD).write_text(json.dumps(record, indent=2))
    log.info("dapt.done", out=str(output_dir), texts=len(train_texts), loss_before=before, loss_after=after,
             seconds=result.seconds)
    return result
