"""Labeled datasets: reading, label mapping, deterministic dev splits and data fingerprints.

Every labeled set under the data path feeds one multi-task model. A row carries a label for one task;
the other task's label is None and its loss is masked.

Splits (``split_method="cluster"``, the default): texts are grouped by a near-duplicate key (URLs, HTML
entities, mojibake, punctuation, case and whitespace folded: tweets re-posted with another ``t.co`` link are
one cluster) and whole clusters go to one side of a seeded, label-stratified split. Each set gets a
**dev** split (reported in the card, never used for any choice) and, when ``select_fraction`` > 0, a
disjoint **select** split that early stopping, temperature fitting and distillation settings are chosen
on. No train row shares a key with any dev or select row of any set. ``split_method="exact"`` reproduces
the splits of artifacts trained before clusters existed (exact text folded for case and whitespace only).
"""

from __future__ import annotations

import csv
import hashlib
import html
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ftfy

from models.labels import UnknownLabelError, normalize_sentiment, normalize_topic, sentiment_index, topic_index
from models.preprocess import URL_RE
from training.reproducibility import file_sha256

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
    select: dict[str, list[LabeledExample]] = field(default_factory=dict)  # selection split (empty: none)
    split_method: str = "cluster"


SPLIT_METHODS = ("cluster", "exact")


class DatasetError(ValueError):
    """A labeled file that cannot be used (missing, no text/label columns, unknown labels)."""


def examples_fingerprint(examples: Iterable[LabeledExample]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.text}\x1f{ex.sentiment}\x1f{ex.topic}\x1f{ex.weight}\x1e".encode())
    return "sha256:" + digest.hexdigest()


def parse_where(conditions: Iterable[str]) -> dict[str, str]:
    """``COLUMN=VALUE`` strings as the ``where`` filter of :func:`read_text_label_csv` (column name stripped, value
    as given): one parser for every command that filters a labels file, so their filters cannot drift."""
    where: dict[str, str] = {}
    for condition in conditions:
        column, sep, value = condition.partition("=")
        if not sep or not column.strip():
            raise DatasetError(f"expected COLUMN=VALUE, got {condition!r}")
        where[column.strip()] = value
    return where


def read_text_label_csv(path: Path, where: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Rows of a ``text,label`` CSV (extra columns ignored), UTF-8, quoted newlines allowed.

    ``where`` keeps only rows whose named columns equal the given values (e.g. ``{"agreement": "100"}``: the
    PhraseBank sentences all annotators agreed on), so a subset is scored from the file itself, not a copy.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    where = dict(where or {})
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "text" not in reader.fieldnames or "label" not in reader.fieldnames:
                raise DatasetError(f"{path}: expected a header with 'text' and 'label' columns, got {reader.fieldnames}")
            missing = sorted(set(where) - set(reader.fieldnames))
            if missing:
                raise DatasetError(f"{path}: no column(s) {missing} to filter on; columns are {reader.fieldnames}")
            rows = []
            for row in reader:
                if any(row[col] is None for col in ("text", "label", *where)):  # a short row: fewer fields than the header
                    raise DatasetError(f"{path}, line {reader.line_num}: fewer fields than the header {reader.fieldnames}")
                if row["text"].strip() and all(row[col] == value for col, value in where.items()):
                    rows.append((row["text"], row["label"]))
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({exc})") from None


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
    bad: dict[str, set[str]] = {}
    for task, normalize in (("sentiment", normalize_sentiment), ("topic", normalize_topic)):
        bad[task] = set()
        for label in labels:
            try:
                normalize(label)
            except UnknownLabelError:
                bad[task].add(label)
        if not bad[task]:
            return task
    numeric = all(label.strip().lstrip("-").isdigit() for label in labels)
    raise DatasetError(
        "labels match neither task: not sentiment names (negative/neutral/positive, Bearish/Neutral/Bullish) "
        f"nor topic names; not sentiment: {sorted(bad['sentiment'])[:20]}, not topic: {sorted(bad['topic'])[:20]}"
        + ("; these are class codes: write the label names instead (code orders differ between datasets, e.g. "
           "0 = negative in PhraseBank but 0 = Bearish, 2 = Neutral in the tweet sentiment set)" if numeric else "")
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


_NON_WORD_RE = re.compile(r"[\W_]+")


def near_duplicate_key(text: str) -> str:
    """Key of a near-duplicate cluster: URLs dropped, entities unescaped, mojibake fixed, punctuation,
    case and whitespace folded. ``"$AAPL up! https://t.co/x"`` and ``"$aapl up https://t.co/y"`` share one."""
    for _ in range(2):
        if "&" in text:
            text = html.unescape(text)
    if not text.isascii():
        text = ftfy.fix_text(text)
    text = URL_RE.sub(" ", text)
    return " ".join(_NON_WORD_RE.sub(" ", text.casefold()).split())


def add_corrections(
    train: Sequence[LabeledExample], corrections: Sequence[LabeledExample], held_out: Sequence[LabeledExample]
) -> list[LabeledExample]:
    """``train`` plus analysts' corrections (feedback rows), by near-duplicate key:

    * a correction that near-duplicates a held-out row (dev, selection) is dropped: the gate and early
      stopping would judge on what was trained on;
    * a correction replaces the base rows of its text for the heads it labels: kept beside them, the
      dataset's old label voted against it at equal weight and the correction was cancelled out.
    """
    held = {near_duplicate_key(ex.text) for ex in held_out}
    kept = [ex for ex in corrections if near_duplicate_key(ex.text) not in held]
    corrected = {(near_duplicate_key(ex.text), head) for ex in kept for head in ("sentiment", "topic")
                 if getattr(ex, head) is not None}

    def superseded(ex: LabeledExample) -> bool:
        key = near_duplicate_key(ex.text)
        return any(getattr(ex, head) is not None and (key, head) in corrected for head in ("sentiment", "topic"))

    return [ex for ex in train if not superseded(ex)] + kept


def cluster_split(
    examples: Sequence[LabeledExample], fraction: float, seed: int
) -> tuple[list[LabeledExample], list[LabeledExample]]:
    """Label-stratified split of whole near-duplicate clusters: no key is on both sides.

    A cluster counts for its most frequent label; per label, clusters are shuffled with the seed and moved
    to the held-out side until it holds ``fraction`` of that label's rows.
    """
    clusters: dict[str, list[LabeledExample]] = defaultdict(list)
    for ex in examples:
        clusters[near_duplicate_key(ex.text)].append(ex)
    by_label: dict[int, list[str]] = defaultdict(list)
    for key, members in clusters.items():
        labels = [label_of(ex) for ex in members]
        by_label[max(sorted(set(labels)), key=labels.count)].append(key)
    rng = random.Random(seed)
    train: list[LabeledExample] = []
    held: list[LabeledExample] = []
    for label in sorted(by_label):
        keys = sorted(by_label[label])
        rng.shuffle(keys)
        total = sum(len(clusters[k]) for k in keys)
        target = max(1, round(total * fraction)) if len(keys) > 1 else 0
        taken = 0
        for key in keys:
            if taken < target:
                held.extend(clusters[key])
                taken += len(clusters[key])
            else:
                train.extend(clusters[key])
    return train, held


def load_labeled_sets(
    data_path: Path,
    seed: int = 13,
    limit_per_dataset: int | None = None,
    specs: Sequence[DatasetSpec] = DATASETS,
    exclude_texts: Iterable[str] = (),
    split_method: str = "cluster",
    select_fraction: float = 0.0,
) -> Splits:
    """Read every labeled set present under ``data_path`` into train and per-set dev (and select) splits.

    ``exclude_texts`` (e.g. a feedback hold-out scored after training) are dropped from train like dev texts.
    """
    if split_method not in SPLIT_METHODS:
        raise ValueError(f"split_method must be one of {SPLIT_METHODS}, got {split_method!r}")
    if not 0 <= select_fraction < 0.5:
        raise ValueError(f"select_fraction must be in [0, 0.5), got {select_fraction}")
    key = near_duplicate_key if split_method == "cluster" else normalize_text
    split = cluster_split if split_method == "cluster" else stratified_split
    data_path = Path(data_path)
    train: list[LabeledExample] = []
    dev: dict[str, list[LabeledExample]] = {}
    select: dict[str, list[LabeledExample]] = {}
    fingerprints: dict[str, str] = {}
    for spec in specs:
        train_path = data_path / spec.train_file
        if not train_path.is_file():
            continue
        fingerprints[spec.train_file] = file_sha256(train_path)
        examples = to_examples(read_text_label_csv(train_path), spec.task, spec.name)
        if spec.dev_file and (data_path / spec.dev_file).is_file():
            fingerprints[spec.dev_file] = file_sha256(data_path / spec.dev_file)
            set_dev = to_examples(read_text_label_csv(data_path / spec.dev_file), spec.task, spec.name)
            dev_keys = {key(ex.text) for ex in set_dev}
            set_train = [ex for ex in examples if key(ex.text) not in dev_keys]
        else:
            set_train, set_dev = split(examples, spec.dev_fraction, seed)
        set_select: list[LabeledExample] = []
        if select_fraction:
            set_train, set_select = split(set_train, select_fraction, seed + 1)
        if limit_per_dataset:
            # One generator per split: the dev sample must not depend on how many rows train/select hold
            # (a run with a selection split and a retrain's gate without one must score the same dev rows).
            def sample(rows: list[LabeledExample], salt: int) -> list[LabeledExample]:
                return random.Random(seed * 1_000_003 + salt).sample(rows, min(limit_per_dataset, len(rows)))

            set_train, set_dev, set_select = sample(set_train, 0), sample(set_dev, 1), sample(set_select, 2)
        train.extend(set_train)
        dev[spec.name] = set_dev
        if select_fraction:
            select[spec.name] = set_select
    if not train:
        raise DatasetError(f"no labeled datasets found under {data_path} (expected e.g. {DATASETS[0].train_file})")
    dev_keys = {key(ex.text) for examples in dev.values() for ex in examples}
    excluded = {key(text) for text in exclude_texts}
    # A selection row twinned in another set's dev split (or an excluded text: a retrain's feedback hold-out) would
    # leak the rows that judge the model into the choices of its epoch and temperature: drop it.
    select = {name: [ex for ex in exs if key(ex.text) not in dev_keys | excluded] for name, exs in select.items()}
    held_out = dev_keys | excluded | {key(ex.text) for examples in select.values() for ex in examples}
    train = [ex for ex in train if key(ex.text) not in held_out]
    return Splits(train=train, dev=dev, fingerprints=fingerprints, select=select, split_method=split_method)


def load_evaluation_csv(path: Path, task: str = "auto",
                        where: Mapping[str, str] | None = None) -> tuple[str, list[LabeledExample]]:
    """A user's ``text,label`` CSV for ``marketmood evaluate``: returns (task, examples)."""
    rows = read_text_label_csv(Path(path), where)
    if not rows:
        raise DatasetError(f"{path}: no rows with text" + (f" where {dict(where)}" if where else ""))
    if task == "auto":
        task = detect_task(label for _, label in rows)
    return task, to_examples(rows, task, Path(path).stem)


def _guard_file(data_path: Path, spec: str) -> Path:
    file = spec.split()[0]
    return Path(file) if Path(file).is_absolute() else Path(data_path) / file


def missing_guard_files(data_path: Path, specs: Iterable[str]) -> list[str]:
    """The guard specs whose file is absent: a data path without PhraseBank (the default guard's set) still
    retrains, with a warning and the missing guards named in the gate report, rather than failing."""
    return [spec for spec in specs if spec.split() and not _guard_file(data_path, spec).is_file()]


def load_guard_slices(data_path: Path, specs: Iterable[str]) -> dict[str, list[LabeledExample]]:
    """Subsets of labeled files the promotion gate guards, keyed ``guard:<spec>``.

    Each spec is ``FILE COLUMN=VALUE ...`` (``FILE`` relative to ``data_path`` unless absolute), the same form as
    ``bench_gate.py --slice``, e.g. ``financial_phrasebank/valid.csv agreement=100``. A missing file, column or an
    empty subset is a :class:`DatasetError`: a guard configured but not applied would protect nothing silently.
    """
    slices: dict[str, list[LabeledExample]] = {}
    for spec in specs:
        if not spec.split():
            raise DatasetError(f"guard slice {spec!r}: expected 'FILE COLUMN=VALUE ...'")
        file, *conditions = spec.split()
        _, examples = load_evaluation_csv(_guard_file(data_path, spec), where=parse_where(conditions))
        slices[f"guard:{' '.join([file, *conditions])}"] = examples
    return slices


@dataclass(frozen=True)
class UnlabeledSpec:
    """An unlabeled in-domain stream (train file only) used as distillation transfer text."""

    name: str
    file: str
    column: str


UNLABELED: tuple[UnlabeledSpec, ...] = (
    UnlabeledSpec("reuters", "reuters_news_stream/reuters_news_2011_2018.train.csv.gz", "headline"),
    UnlabeledSpec("stocknet", "stocknet_tweets_stream/stocknet_tweets_2014_2016.train.csv.gz", "text"),
)


def load_unlabeled(
    data_path: Path, per_stream: int, seed: int, exclude_keys: set[str] = frozenset(),  # type: ignore[assignment]
    specs: Sequence[UnlabeledSpec] = UNLABELED,
) -> tuple[list[LabeledExample], dict[str, str]]:
    """Up to ``per_stream`` distinct texts from each stream's train file (seeded sample, near-duplicates and
    ``exclude_keys`` dropped), as examples with no gold label; plus the files' fingerprints."""
    import gzip

    out: list[LabeledExample] = []
    fingerprints: dict[str, str] = {}
    for spec in specs:
        path = Path(data_path) / spec.file
        if not path.is_file() or per_stream <= 0:
            continue
        fingerprints[spec.file] = file_sha256(path)
        opener = gzip.open if path.suffix == ".gz" else open
        by_key: dict[str, str] = {}
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                text = (row.get(spec.column) or "").strip()
                if text:
                    by_key.setdefault(near_duplicate_key(text), text)
        keys = sorted(k for k in by_key if k and k not in exclude_keys)
        random.Random(seed).shuffle(keys)
        out.extend(LabeledExample(by_key[k], source=f"unlabeled:{spec.name}") for k in keys[:per_stream])
    return out, fingerprints
