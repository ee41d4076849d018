"""Labeled datasets: reading, label mapping, deterministic dev splits and data fingerprints.

Every labeled set under the data path feeds one multi-task model. A row carries a label for one task;
the other task's label is None and its loss is masked. Dev splits are carved from the train files with a
fixed seed (stratified), and no dev text is ever trained on (exact-text de-duplication across sets).
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.labels import UnknownLabelError, normalize_sentiment, normalize_topic, sentiment_index, topic_index

csv.field_size_limit(10_000_000)


@dataclass(frozen=True, slots=True)
class LabeledExample:
    """One training/eval text. ``sentiment``/``topic`` are label indices, or None when not labeled."""

    text: str
    sentiment: int | None = None
    topic: int | None = None
    weight: float = 1.0
    source: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a labeled set lives, which task it labels, and how its dev split is made."""

    name: str
    train_file: str
    task: str  # "sentiment" | "topic"
    dev_file: str | None = None  # an official dev split shipped with the data, used as-is
    dev_fraction: float = 0.1


DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("phrasebank", "financial_phrasebank/train.csv", "sentiment", dev_file="financial_phrasebank/valid.csv"),
    DatasetSpec("tweet_sentiment", "twitter_financial_news_sentiment/train.csv", "sentiment", dev_fraction=0.1),
    DatasetSpec("tweet_topic", "twitter_financial_news_topic/train.csv", "topic", dev_fraction=0.1),
    DatasetSpec("fiqa", "fiqa_2018_task1/train.csv", "sentiment", dev_fraction=0.15),
)


@dataclass
class Splits:
    train: list[LabeledExample]
    dev: dict[str, list[LabeledExample]]
    fingerprints: dict[str, str] = field(default_factory=dict)


class DatasetError(ValueError):
    """A labeled file that cannot be used (missing, no text/label columns, unknown labels)."""


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def examples_fingerprint(examples: Iterable[LabeledExample]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.text}\x1f{ex.sentiment}\x1f{ex.topic}\x1f{ex.weight}\x1e".encode())
    return "sha256:" + digest.hexdigest()


def read_text_label_csv(path: Path) -> list[tuple[str, str]]:
    """Rows of a ``text,label`` CSV (extra columns ignored), UTF-8, quoted newlines allowed."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "text" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise DatasetError(f"{path}: expected a header with 'text' and 'label' columns, got {reader.fieldnames}")
        return [(row["text"], row["label"]) for row in reader if row["text"] and row["text"].strip()]


def to_examples(rows: Sequence[tuple[str, str]], task: str, source: str) -> list[LabeledExample]:
    """Map label names to indices for ``task``; all unknown labels are reported at once."""
    out: list[LabeledExample] = []
    unknown: dict[str, int] = defaultdict(int)
    for text, label in rows:
        try:
            if task == "sentiment":
                out.append(LabeledExample(text=text, sentiment=sentiment_index(label), source=source))
            else:
                out.append(LabeledExample(text=text, topic=topic_index(label), source=source))
        except UnknownLabelError:
            unknown[label] += 1
    if unknown:
        raise DatasetError(f"{source}: unknown {task} labels {dict(unknown)}")
    return out


def detect_task(labels: Iterable[str]) -> str:
    """'sentiment' if every label is a sentiment name, 'topic' if every one is a topic, else a clear error."""
    labels = set(labels)
    for task, normalize in (("sentiment", normalize_sentiment), ("topic", normalize_topic)):
        bad = set()
        for label in labels:
            try:
                normalize(label)
            except UnknownLabelError:
                bad.add(label)
        if not bad:
            return task
    raise DatasetError(
        "labels match neither task: not sentiment names (negative/neutral/positive, Bearish/Neutral/Bullish) "
        f"nor topic names; unknown labels: {sorted(labels)[:20]}"
    )


def label_of(example: LabeledExample) -> int:
    return example.sentiment if example.sentiment is not None else example.topic  # type: ignore[return-value]


def stratified_split(
    examples: Sequence[LabeledExample], fraction: float, seed: int
) -> tuple[list[LabeledExample], list[LabeledExample]]:
    """Deterministic per-label split: the same seed and data always give the same dev set."""
    by_label: dict[int, list[LabeledExample]] = defaultdict(list)
    for ex in examples:
        by_label[label_of(ex)].append(ex)
    rng = random.Random(seed)
    train: list[LabeledExample] = []
    dev: list[LabeledExample] = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_dev = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        dev.extend(group[:n_dev])
        train.extend(group[n_dev:])
    return train, dev


def normalize_text(text: str) -> str:
    """The key two texts are "the same" by (case and whitespace folded): used to keep eval texts out of train."""
    return " ".join(text.casefold().split())


def load_labeled_sets(
    data_path: Path,
    seed: int = 13,
    limit_per_dataset: int | None = None,
    specs: Sequence[DatasetSpec] = DATASETS,
    exclude_texts: Iterable[str] = (),
) -> Splits:
    """Read every labeled set present under ``data_path`` into train and per-set dev splits.

    ``exclude_texts`` (e.g. a feedback hold-out scored after training) are dropped from train like dev texts.
    """
    data_path = Path(data_path)
    train: list[LabeledExample] = []
    dev: dict[str, list[LabeledExample]] = {}
    fingerprints: dict[str, str] = {}
    for spec in specs:
        train_path = data_path / spec.train_file
        if not train_path.is_file():
            continue
        fingerprints[spec.train_file] = file_fingerprint(train_path)
        examples = to_examples(read_text_label_csv(train_path), spec.task, spec.name)
        if spec.dev_file and (data_path / spec.dev_file).is_file():
            fingerprints[spec.dev_file] = file_fingerprint(data_path / spec.dev_file)
            set_train = examples
            set_dev = to_examples(read_text_label_csv(data_path / spec.dev_file), spec.task, spec.name)
        else:
            set_train, set_dev = stratified_split(examples, spec.dev_fraction, seed)
        if limit_per_dataset:
            rng = random.Random(seed)
            set_train = rng.sample(set_train, min(limit_per_dataset, len(set_train)))
            set_dev = rng.sample(set_dev, min(limit_per_dataset, len(set_dev)))
        train.extend(set_train)
        dev[spec.name] = set_dev
    if not train:
        raise DatasetError(f"no labeled datasets found under {data_path} (expected e.g. {DATASETS[0].train_file})")
    held_out = {normalize_text(ex.text) for examples in dev.values() for ex in examples}
    held_out |= {normalize_text(text) for text in exclude_texts}
    train = [ex for ex in train if normalize_text(ex.text) not in held_out]
    return Splits(train=train, dev=dev, fingerprints=fingerprints)


def load_evaluation_csv(path: Path, task: str = "auto") -> tuple[str, list[LabeledExample]]:
    """A user's ``text,label`` CSV for ``marketmood evaluate``: returns (task, examples)."""
    rows = read_text_label_csv(Path(path))
    if not rows:
        raise DatasetError(f"{path}: no rows with text")
    if task == "auto":
        task = detect_task(label for _, label in rows)
    return task, to_examples(rows, task, Path(path).stem)
