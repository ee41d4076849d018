"""``marketmood retrain``: feedback-weighted fine-tune of a challenger, the promotion gate, registration.

Steps: take the cluster-wide retrain lock (skip if another replica holds it) -> make sure a champion
exists -> split feedback time-forward (the newest slice is held out for evaluation, never trained on) ->
train the challenger on base data + older feedback (weighted up) -> evaluate champion and challenger on
the same frozen dev sets + the held-out feedback on the CPU serving path -> gate -> store the version with
its report -> promote when it passed.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from models.artifact import ArtifactError, read_info, read_training_config
from models.labels import SENTIMENT_LABELS, TOPIC_LABELS, sentiment_index, topic_index
from models.prediction import Classifier
from models.text_encoder import TextEncoder
from models.smoke import SMOKE_TEXTS, check_predictions
from storage import feedback as feedback_sql
from storage import registry as registry_sql
from storage.feedback import FeedbackRow
from training import registry
from training.datasets import (
    DatasetError,
    LabeledExample,
    examples_fingerprint,
    load_guard_slices,
    load_labeled_sets,
    missing_guard_files,
    near_duplicate_key,
)
from training.evaluation import split_by_task, task_metrics
from training.feedback_policy import FeedbackPolicy, MergedText, merge_feedback
from training.gate import Candidate, GateConfig, build_report, evaluate_gate

log = structlog.get_logger(__name__)

FEEDBACK_SET = "feedback_recent"
FEEDBACK_IDS = "feedback_ids"  # training_config.retrain key: the feedback rows a retrain read (id_ranges)
SPLIT_RECORD = "gate_split"  # training_config key: how the gate's dev rows were made, and their hash
REPORT_JSON = "gate_report.json"
REPORT_MD = "gate_report.md"


@dataclass(frozen=True)
class RetrainOutcome:
    status: str  # skipped | promoted | shadow | rejected | registered (passed, auto-promote off) | failed
    reason: str
    version: str | None = None
    champion: str | None = None
    report: dict[str, Any] | None = None


# ---------------------------------------------------------------- pure helpers

def warm_start_from(champion_dir: Path) -> Path | None:
    """The champion's folder when it can seed a warm start (torch weights present), else None."""
    from models.artifact import has_torch_weights

    return champion_dir if has_torch_weights(champion_dir) else None



def to_example(row: MergedText, weight: float) -> LabeledExample:
    return LabeledExample(
        text=row.text,
        sentiment=None if row.sentiment is None else sentiment_index(row.sentiment),
        topic=None if row.topic is None else topic_index(row.topic),
        weight=weight,
        source="feedback",
    )


def split_feedback(
    merged: Sequence[MergedText], *, holdout_fraction: float, weight: float, exclude_texts: set[str],
    seen_by_champion: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[LabeledExample], list[LabeledExample]]:
    """(train, holdout) from merged, accepted labels: the newest ``holdout_fraction`` of texts (by the time
    their label was accepted) is held out; no held-out or dev text is trained on.

    Texts are compared by near-duplicate key (``datasets.near_duplicate_key``: URLs, punctuation, entities
    folded), as the dataset splits are: a tweet re-posted with a new t.co link is the same text.
    ``exclude_texts`` and ``seen_by_champion`` hold such keys. A text the champion may have trained on
    (accepted by its feedback cutoff) is never held out: a late confirming vote makes it "new" by
    ``accepted_at``, and scoring the champion on its own training rows favours it in the feedback vote."""
    ordered = sorted(merged, key=lambda m: (m.accepted_at, m.key))
    eligible = [m for m in ordered if near_duplicate_key(m.text) not in seen_by_champion]
    n_holdout = min(math.floor(len(ordered) * holdout_fraction), len(eligible))
    holdout_rows = eligible[len(eligible) - n_holdout:] if n_holdout else []
    held = {id(r) for r in holdout_rows}
    blocked = exclude_texts | {near_duplicate_key(r.text) for r in holdout_rows}
    train = [to_example(r, weight) for r in ordered
             if id(r) not in held and near_duplicate_key(r.text) not in blocked]
    return train, [to_example(r, 1.0) for r in holdout_rows]


def id_ranges(ids: Iterable[int]) -> list[list[int]]:
    """``ids`` as sorted ``[first, last]`` runs: the feedback a retrain read, compact enough for its training_config
    (ids come from a sequence, so a read of 100,000 rows is a handful of runs; the gaps are rows not read)."""
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def in_ranges(ranges: Sequence[Sequence[int]], ident: int) -> bool:
    """Whether ``ident`` lies in one of the sorted ``[first, last]`` runs made by :func:`id_ranges`."""
    at = bisect.bisect_right([first for first, _ in ranges], ident) - 1
    return at >= 0 and ident <= ranges[at][1]


def read_feedback(engine: Engine) -> tuple[list[FeedbackRow], dict[str, Any]]:
    """The feedback a retrain trains on, and what its record keeps of that read (``training_config.retrain``).

    ``feedback_ids`` (the ids of the rows read, :func:`id_ranges`) says what this retrain saw. ``feedback_until``
    (the newest ``created_at`` visible) is not enough: ``created_at`` is the inserting transaction's start, so a CSV
    import that began before this read and commits after it carries an earlier time although it was never read.
    ``feedback_until`` stays for the scheduler's "new since the last retrain" count."""
    with engine.connect() as conn:
        until = feedback_sql.latest_feedback_time(conn)
        rows = feedback_sql.fetch_feedback(conn, until=until)
    return rows, {"feedback_until": until.isoformat() if until else None,
                  FEEDBACK_IDS: id_ranges(row.id for row in rows)}


def feedback_read_by(engine: Engine, retrain_record: dict[str, Any]) -> list[FeedbackRow]:
    """The feedback rows a retrain read, from its record (``training_config.retrain``; none when there is none).

    By id (``feedback_ids``) when recorded: a row committed after the read is never counted as read, whatever its
    ``created_at``. Records written before ids were kept give only ``feedback_until``: read as before, by time,
    which counts such a late-committing row as read."""
    ranges = retrain_record.get(FEEDBACK_IDS)
    cutoff = retrain_record.get("feedback_until")
    if ranges is None and not cutoff:
        return []
    with engine.connect() as conn:
        if ranges is None:
            return feedback_sql.fetch_feedback(conn, until=datetime.fromisoformat(cutoff))
        return [row for row in feedback_sql.fetch_feedback(conn) if in_ranges(ranges, row.id)]


def feedback_seen_by(engine: Engine, champion_record: dict[str, Any], policy: FeedbackPolicy,
                     base_train: Sequence[LabeledExample] = ()) -> set[str]:
    """Near-duplicate keys of what the champion may have trained on: the feedback texts accepted from what its
    retrain read (:func:`feedback_read_by`; none for a champion no retrain produced: the bundled model, a registered
    artifact) and the base sets' train rows ``base_train`` (an analyst's correction of a PhraseBank train sentence:
    the champion trained on it, the challenger would be barred from it, and the superiority vote on the hold-out
    would favour the champion)."""
    seen = {near_duplicate_key(ex.text) for ex in base_train}
    rows = feedback_read_by(engine, (champion_record.get("training_config") or {}).get("retrain") or {})
    if not rows:
        return seen
    return seen | {near_duplicate_key(m.text) for m in merge_feedback(rows, policy).texts}


def split_mismatch(champion: dict[str, Any], challenger_config: dict[str, Any]) -> str | None:
    """Why a challenger may have trained or chosen its epoch on the champion's dev (gate) rows, or None.

    ``champion`` is :func:`champion_split` of the champion; ``challenger_config`` the challenger's
    ``training_config.json``. A retrain makes its challenger on the champion's split by construction; an
    artifact registered by hand (``models register --promote``) must be checked."""
    if not challenger_config:
        return "the challenger has no training_config.json: the rows it trained on cannot be checked"
    theirs = champion_split(challenger_config)
    for key in ("seed", "split_method"):
        if theirs[key] != champion[key]:
            return (f"the challenger was trained with {key}={theirs[key]!r} but the champion's dev split (the gate's "
                    f"rows) used {key}={champion[key]!r}: it may have trained on the rows it would be judged on")
    if champion.get("limit_per_dataset") and theirs.get("limit_per_dataset") != champion["limit_per_dataset"]:
        return (f"the challenger was trained with limit_per_dataset={theirs.get('limit_per_dataset')!r}, the "
                f"champion's dev split used {champion['limit_per_dataset']!r}")
    config = challenger_config.get("config") or {}
    # no select_fraction recorded: trained before the selection split existed, so it chose its epoch on dev
    if isinstance(config, dict) and float(config.get("select_fraction") or 0) <= 0:
        return "the challenger was trained with select_fraction=0: it chose its epoch on the gate's dev rows"
    return None


def data_mismatch(challenger_config: dict[str, Any], data_fingerprints: dict[str, str]) -> str | None:
    """Why a challenger may have trained on the gate's rows because it read other data files, or None.

    ``data_fingerprints`` are the files the gate's splits were read from (``Splits.fingerprints``). The split is a
    seeded shuffle of a file's clusters, so one row added to or removed from a file moves most of its dev rows: a
    challenger trained on another version of a file (same seed) trained on the rows it would be judged on. Files it
    did not read, or an artifact that records no fingerprints, are not a mismatch."""
    theirs = challenger_config.get("data_fingerprints") or {}
    if not isinstance(theirs, dict):
        return None
    changed = sorted(name for name, fp in data_fingerprints.items() if theirs.get(name) not in (None, fp))
    if changed:
        return (f"the challenger was trained on other versions of {', '.join(changed)} than the gate's data path "
                "holds: its train split may hold the rows it would be judged on")
    return None


def dev_fingerprint(dev: dict[str, list[LabeledExample]]) -> str:
    """One hash over every gate row (text and labels) of every dev set: equal hashes = the same gate rows."""
    per_set = {name: examples_fingerprint(exs) for name, exs in sorted(dev.items())}
    return "sha256:" + hashlib.sha256(json.dumps(per_set, sort_keys=True).encode()).hexdigest()


def champion_split(training_config: dict[str, Any]) -> dict[str, Any]:
    """How the champion's dev split was made: its recorded gate split, else its training config.

    Artifacts trained before near-duplicate clusters record no ``split_method``: theirs was "exact".
    """
    recorded = training_config.get(SPLIT_RECORD)
    if recorded:
        return dict(recorded)
    cfg = training_config.get("config") or {}
    if isinstance(cfg, str):  # very old artifacts stored a repr; nothing reliable to read
        cfg = {}
    return {"seed": int(cfg.get("seed", 13)),
            "split_method": cfg.get("split_method", training_config.get("split_method", "exact")),
            "limit_per_dataset": cfg.get("limit_per_dataset"), "dev_fingerprint": None}


# ---------------------------------------------------------------- model-facing steps


def load_cpu_classifier(artifact_dir: Path) -> Classifier:
    """The CPU serving path (int8 ONNX when exported), the one the gate judges."""
    from models.engine import load_engine

    return load_engine(artifact_dir, device="cpu", backend="auto")


def smoke_test(artifact_dir: Path) -> tuple[bool, str]:
    """Load the exported artifact as a worker would, classify sample texts, check every output."""
    try:
        version = read_info(artifact_dir).version
        predictions = load_cpu_classifier(artifact_dir).classify(list(SMOKE_TEXTS))
    except Exception as exc:  # noqa: BLE001 - any failure to load or run is the verdict
        return False, f"{type(exc).__name__}: {exc}"
    problems = check_predictions(predictions, len(SMOKE_TEXTS), version)
    return (not problems), ("; ".join(problems) if problems else f"ok ({len(SMOKE_TEXTS)} texts)")


def measure_latency(classifier: Classifier, texts: Sequence[str], batch_size: int = 32) -> float:
    """Milliseconds per text over ``texts`` in batches, after one warm-up batch."""
    texts = list(texts)
    classifier.classify(texts[:batch_size])
    started = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        classifier.classify(texts[i : i + batch_size])
    return (time.perf_counter() - started) * 1000.0 / max(1, len(texts))


def predict_sets(classifier: Classifier, sets: dict[str, list[LabeledExample]], batch_size: int = 256
                 ) -> dict[str, dict[str, tuple[list[int], list[int]]]]:
    """{set: {task: (gold, predicted)}} label indices, row by row: what the paired gate compares."""
    out: dict[str, dict[str, tuple[list[int], list[int]]]] = {}
    for name, examples in sets.items():
        for task, exs in split_by_task(examples).items():
            predictions = []
            for start in range(0, len(exs), batch_size):
                predictions.extend(classifier.classify([ex.text for ex in exs[start : start + batch_size]]))
            if task == "sentiment":
                gold = [int(ex.sentiment) for ex in exs]  # type: ignore[arg-type]
                pred = [SENTIMENT_LABELS.index(p.sentiment) for p in predictions]
            else:
                gold = [int(ex.topic) for ex in exs]  # type: ignore[arg-type]
                pred = [TOPIC_LABELS.index(p.topic) for p in predictions]
            out.setdefault(name, {})[task] = (gold, pred)
    return out


def cluster_ids(sets: dict[str, list[LabeledExample]]) -> dict[str, dict[str, list[str]]]:
    """{set: {task: near-duplicate key of each row}}, in ``predict_sets``' row order: the gate's paired bootstrap
    resamples these clusters, not rows (the cluster splits keep whole clusters in dev, so its rows are not
    independent; tweet_topic's 1,701 dev rows are 1,543 clusters)."""
    return {name: {task: [near_duplicate_key(ex.text) for ex in exs] for task, exs in split_by_task(examples).items()}
            for name, examples in sets.items()}


def candidate(version: str, artifact_dir: Path, sets: dict[str, list[LabeledExample]], latency_texts: Sequence[str],
              *, smoke: bool) -> Candidate:
    if smoke:
        ok, detail = smoke_test(artifact_dir)
        if not ok:  # cannot load or cannot classify: that is the verdict (rejected), not a crash of the retrain
            try:
                labels = read_info(artifact_dir).labels
            except Exception:  # noqa: BLE001 - an unreadable artifact.json is part of the same verdict
                labels = {}
            return Candidate(version, labels, {}, None, False, detail, {})
    classifier = load_cpu_classifier(artifact_dir)
    predictions = predict_sets(classifier, sets)
    metrics = {name: {task: task_metrics(task, gold, pred) for task, (gold, pred) in tasks.items()}
               for name, tasks in predictions.items()}
    latency = measure_latency(classifier, latency_texts)
    if not smoke:
        ok, detail = True, "not required for the champion"
    return Candidate(version, read_info(artifact_dir).labels, metrics, latency, ok, detail, predictions,
                     clusters=cluster_ids(sets))


# ---------------------------------------------------------------- orchestration


@contextlib.contextmanager
def retrain_lock(engine: Engine) -> Iterator[bool]:
    """Yield True while this process holds the cluster-wide retrain lock, False if another one does.

    A session-level advisory lock on a dedicated autocommit connection: it is never "idle in transaction"
    during a long training run, and a crashed process frees it when its connection drops. That connection can
    also die under a running retrain (a PostgreSQL restart or failover): the server freed the lock with it, so a
    failed unlock is logged, not raised over the retrain's outcome (a promotion may already have happened).
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        acquired = registry_sql.try_advisory_lock(conn)
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    registry_sql.advisory_unlock(conn)
                except DBAPIError as exc:
                    log.warning("retrain.lock_connection_lost", error=str(exc).splitlines()[0])


def guard_sets(data_path: Path, specs: Sequence[str]) -> tuple[dict[str, list[LabeledExample]], list[str]]:
    """The guard slices to judge, and the specs skipped because their file is not under the data path (logged)."""
    missing = missing_guard_files(data_path, specs)
    if missing:
        log.warning("retrain.guard_slices_missing", specs=missing, data_path=str(data_path))
    return load_guard_slices(data_path, [spec for spec in specs if spec not in missing]), missing


def gate_config_from(settings: Any) -> GateConfig:
    r = settings.retrain
    return GateConfig(delta=r.gate_delta, set_delta=r.gate_set_delta, confidence=r.gate_confidence,
                      bootstrap_samples=r.gate_bootstrap_samples, min_examples=r.gate_min_examples,
                      min_feedback_examples=r.gate_min_feedback_examples,
                      min_feedback_confirmations=r.gate_min_feedback_confirmations,
                      guard_delta=r.gate_guard_delta, min_guard_examples=r.gate_min_guard_examples,
                      class_delta=r.gate_class_delta, min_class_support=r.gate_min_class_support,
                      latency_budget_ms=r.latency_budget_ms)


def policy_from(settings: Any) -> FeedbackPolicy:
    r = settings.retrain
    return FeedbackPolicy(reviewers=frozenset(r.feedback_reviewers), min_agreeing_authors=r.feedback_min_agreeing,
                          max_author_share=r.feedback_max_author_share, author_floor=r.feedback_author_floor)


def prune_work_dir(engine: Engine, work_dir: Path, *, keep: str) -> list[Path]:
    """Delete the folders of earlier retrains' challengers that the registry holds; return what was deleted.

    Each retrain trains into ``work_dir/<version>`` (fp32 weights, the int8 ONNX, plots: ~110 MB) and, once its
    challenger is registered (rejected or not), the registry holds the artifact and its gate report: kept, every
    scheduled run added another such folder for good. The folder of ``keep`` (this run's) stays for an operator
    to inspect until the next retrain, and so does any folder whose version is not in the registry (a run that
    crashed before registering, kept to debug; delete it by hand) or that is not a retrain's (named otherwise
    than the version inside). The folder of a version in service (active or in shadow) stays until it leaves
    service: with a slim registry it is the only copy of that model's fp32 weights. Runs under the retrain lock,
    so no other retrain is writing there.
    """
    if not work_dir.is_dir():
        return []
    candidates = []
    for folder in sorted(work_dir.iterdir()):
        if folder.name == keep or not folder.is_dir():
            continue
        try:
            if read_info(folder).version != folder.name:
                continue
        except (ArtifactError, OSError, ValueError, TypeError):  # not an artifact, or unreadable: not ours
            continue
        candidates.append(folder)
    removed = []
    with engine.connect() as conn:
        in_service = {registry_sql.get_alias(conn, alias) for alias in (registry_sql.ACTIVE_ALIAS,
                                                                        registry_sql.SHADOW_ALIAS)}
        for folder in candidates:
            if (folder.name not in in_service
                    and registry_sql.get_version(conn, folder.name, with_report=False) is not None):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    if removed:
        log.info("retrain.work_dir_pruned", work_dir=str(work_dir), removed=[f.name for f in removed], kept=keep)
    return removed


def run_retrain(
    engine: Engine,
    settings: Any,
    *,
    by: str = "retrain",
    trigger: str = "manual",
    train_overrides: dict[str, Any] | None = None,
    promote: bool | None = None,
) -> RetrainOutcome:
    """One retrain under the advisory lock; returns what happened (never raises for a rejected model)."""
    with retrain_lock(engine) as acquired:
        if not acquired:
            log.info("retrain.skipped", reason="another retrain holds the lock")
            return RetrainOutcome("skipped", "another retrain is running (advisory lock held)")
        return _retrain_locked(engine, settings, by=by, trigger=trigger,
                               train_overrides=train_overrides or {}, promote=promote)


def _retrain_locked(engine: Engine, settings: Any, *, by: str, trigger: str, train_overrides: dict[str, Any],
                    promote: bool | None) -> RetrainOutcome:
    from training.config import TrainConfig
    from training.trainer import train

    train_overrides = dict(train_overrides)
    r = settings.retrain
    home = Path(settings.home)
    cache_dir = registry.model_cache_dir(settings)
    work_dir = Path(r.work_dir or home / "retrain")

    champion_version = registry.ensure_champion(engine)
    if champion_version is None:
        return RetrainOutcome("failed", "no champion: the registry is empty and no bundled model exists")
    champion_dir = registry.fetch_artifact(engine, champion_version, cache_dir)
    with engine.connect() as conn:
        champion_record = registry_sql.get_version(conn, champion_version, with_report=False) or {}

    # The gate's rows are the champion's dev rows: same seed, split method and limit, checked by hash.
    split = champion_split(champion_record.get("training_config") or {})
    for key in ("seed", "split_method"):
        if key in train_overrides and train_overrides[key] != split[key]:
            return RetrainOutcome("failed", f"refusing to retrain with {key}={train_overrides[key]!r}: the champion "
                                  f"{champion_version}'s dev split used {key}={split[key]!r}, and the gate must "
                                  "judge both models on rows neither trained on", champion=champion_version)
    limit = train_overrides.get("limit_per_dataset", r.limit_per_dataset)
    if split.get("limit_per_dataset") and limit != split["limit_per_dataset"]:
        return RetrainOutcome("failed", f"refusing to retrain with limit_per_dataset={limit}: the champion's dev "
                              f"split used {split['limit_per_dataset']}", champion=champion_version)
    data_path = Path(train_overrides.get("data_path", settings.data_path))
    try:  # no datasets under the data path (a host without them), an unreadable file: say so, as an outcome
        splits = load_labeled_sets(data_path, seed=split["seed"], limit_per_dataset=limit,
                                   split_method=split["split_method"])
    except DatasetError as exc:
        return RetrainOutcome("failed", f"cannot read the labeled sets: {exc}", champion=champion_version)
    fingerprint = dev_fingerprint(splits.dev)
    if split.get("dev_fingerprint") and split["dev_fingerprint"] != fingerprint:
        return RetrainOutcome("failed", f"refusing to retrain: the dev split's fingerprint {fingerprint[:19]} differs "
                              f"from the champion's {split['dev_fingerprint'][:19]} (data changed under "
                              f"{data_path}?)", champion=champion_version)

    try:  # before minutes of training: a guard slice that cannot be read is a configuration error
        guards, guards_missing = guard_sets(data_path, r.gate_guard_slices)
    except DatasetError as exc:
        return RetrainOutcome("failed", f"retrain.gate_guard_slices: {exc}", champion=champion_version)
    rows, feedback_record = read_feedback(engine)
    policy = policy_from(settings)
    merged = merge_feedback(rows, policy)
    # A label on a text the serving model cannot read (U+FFFD, private use) would stop the gate, which scores
    # every hold-out row, at every scheduled retrain: such texts are left out and counted in the report.
    readable = TextEncoder.of_artifact(champion_dir).readable
    unreadable = [m for m in merged.texts if not readable(m.text)]
    if unreadable:
        log.warning("retrain.feedback_unreadable", texts=len(unreadable), examples=[m.text[:40] for m in unreadable[:3]])
        dropped = {id(m) for m in unreadable}  # tokenized once: the check runs the champion's tokenizer
        merged = replace(merged, texts=[m for m in merged.texts if id(m) not in dropped])
    dev_keys = {near_duplicate_key(ex.text) for exs in [*splits.dev.values(), *guards.values()] for ex in exs}
    extra, holdout = split_feedback(merged.texts, holdout_fraction=r.feedback_holdout_fraction,
                                    weight=r.feedback_weight, exclude_texts=dev_keys,
                                    seen_by_champion=feedback_seen_by(engine, champion_record, policy,
                                                                      base_train=splits.train))
    eval_sets = {**splits.dev, **guards, FEEDBACK_SET: holdout}

    version = train_overrides.pop("version", None) or "mm-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    warm = warm_start_from(champion_dir) if r.warm_start else None
    if r.warm_start and warm is None:
        log.warning("retrain.cold_start", champion=champion_version,
                    reason="the champion's artifact has no torch weights (set retrain.registry_include_weights)")
    config = TrainConfig(**{
        "data_path": data_path,
        "output_dir": work_dir / version,
        "version": version,
        "parent_version": champion_version,
        "epochs": r.epochs,
        "max_steps": r.max_steps,
        "limit_per_dataset": limit,
        "base_encoder": settings.model.base_encoder,
        **train_overrides,
        **({"init_from": champion_dir, "preprocessing": read_info(champion_dir).preprocessing} if warm else {}),
        "seed": split["seed"],
        "split_method": split["split_method"],
        "extra_examples": tuple(extra),
        # The hold-out is scored after training: keep it out of the base datasets' train rows too.
        "exclude_texts": tuple(ex.text for ex in holdout),
    })
    if config.select_fraction <= 0:
        return RetrainOutcome("failed", "refusing to retrain with select_fraction=0: early stopping would choose "
                              "on the gate's dev rows", champion=champion_version)
    log.info("retrain.train", version=version, champion=champion_version, feedback_train=len(extra),
             feedback_holdout=len(holdout), trigger=trigger, feedback=merged.summary())
    challenger_dir = train(config, progress=False)

    latency_texts = [ex.text for exs in splits.dev.values() for ex in exs[:32]][:96] or list(SMOKE_TEXTS)
    champ = candidate(champion_version, champion_dir, eval_sets, latency_texts, smoke=False)
    chall = candidate(version, challenger_dir, eval_sets, latency_texts, smoke=True)
    gate_cfg = gate_config_from(settings)
    result = evaluate_gate(champ, chall, gate_cfg)
    split_record = {"seed": split["seed"], "split_method": split["split_method"], "limit_per_dataset": limit,
                    "dev_fingerprint": fingerprint}
    report = build_report(champ, chall, result, gate_cfg, extra={
        "trigger": trigger,
        "eval_sizes": {k: len(v) for k, v in eval_sets.items()},
        "guard_slices_missing": guards_missing,
        "gate_split": split_record,
        "early_stopping": f"selection split ({config.select_fraction:.0%} of each set's train rows)",
        "feedback": {"train": len(extra), "holdout": len(holdout), "weight": r.feedback_weight,
                     "unreadable": len(unreadable),
                     "until": feedback_record["feedback_until"], "merge": merged.summary()},
    })
    (challenger_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n")
    (challenger_dir / REPORT_MD).write_text(report["markdown"])

    retrain_record = {"retrain": {
        "trigger": trigger, "by": by, "champion": champion_version,
        **feedback_record,
        "feedback_train": len(extra), "feedback_holdout": len(holdout),
        "warm_start": warm is not None,
    }, SPLIT_RECORD: split_record}
    registry.register_artifact(engine, challenger_dir, status="candidate", report=report, extra_config=retrain_record,
                               slim=not r.registry_include_weights)
    # The resume checkpoint (weights, optimizer state, best state: ~4x the model) serves no finished run and the
    # registry never ships it; kept, every scheduled retrain left hundreds of MB under the work dir.
    shutil.rmtree(challenger_dir / registry.CHECKPOINT_DIR, ignore_errors=True)
    should_promote = r.auto_promote if promote is None else promote
    outcome = _act_on_verdict(engine, settings, version, champion_version, result, report, by=by,
                              why=f"retrain ({trigger})", promote=should_promote)
    try:  # after the verdict: housekeeping never stands between a registered challenger and its promotion
        prune_work_dir(engine, work_dir, keep=version)
    except Exception as exc:  # noqa: BLE001 - a full disk or a lost connection: the next retrain tries again
        log.warning("retrain.work_dir_prune_failed", work_dir=str(work_dir), error=str(exc)[:200])
    return outcome


def _act_on_verdict(engine: Engine, settings: Any, version: str, champion_version: str, result: Any,
                    report: dict[str, Any], *, by: str, why: str, promote: bool) -> RetrainOutcome:
    """Rejected -> status rejected; passed -> shadow stage (or straight to active when shadow_hours is 0)."""
    r = settings.retrain
    if not result.passed:
        with engine.begin() as conn:
            registry_sql.set_status(conn, version, "rejected")
        reason = "; ".join(f"{c.name}: {c.detail}" for c in result.failures)
        log.warning("retrain.rejected", version=version, failures=reason)
        return RetrainOutcome("rejected", reason, version, champion_version, report)
    if not promote:
        return RetrainOutcome("registered", "passed the gate; promotion left to an operator", version,
                              champion_version, report)
    try:
        if r.shadow_hours > 0:
            registry.start_shadow(engine, version, by=by, reason=f"{why}: passed the gate",
                                  expected_active=champion_version)
            log.info("retrain.shadow", version=version, champion=champion_version, hours=r.shadow_hours)
            return RetrainOutcome("shadow", f"passed the gate; scoring in shadow for {r.shadow_hours} h before "
                                  "promotion", version, champion_version, report)
        registry.promote(engine, version, by=by, reason=f"{why}: passed the gate", expected_active=champion_version)
    except registry.ChampionChangedError as exc:
        # E.g. a rollback while this model trained: it was judged against a model that is no longer serving.
        log.warning("retrain.champion_changed", version=version, champion=champion_version, detail=str(exc))
        return RetrainOutcome("registered", f"passed the gate against {champion_version}, but {exc}: left a "
                              f"candidate (`marketmood models promote {version}` if it should serve)", version,
                              champion_version, report)
    log.info("retrain.promoted", version=version, previous=champion_version)
    return RetrainOutcome("promoted", "passed the gate", version, champion_version, report)


def gate_existing(engine: Engine, settings: Any, version: str, artifact_dir: Path, *, by: str,
                  trigger: str = "register") -> RetrainOutcome:
    """Gate an already registered version (``models register --promote``, ``models gate``) against the active one
    on the champion's dev split, store the report, then act like a retrain would. ``trigger`` names the command in
    the report and the alias history."""
    r = settings.retrain
    champion_version = registry.ensure_champion(engine)
    if champion_version is None or champion_version == version:
        raise registry.RegistryError(f"nothing to gate {version} against (active: {champion_version})")
    champion_dir = registry.fetch_artifact(engine, champion_version, registry.model_cache_dir(settings))
    with engine.connect() as conn:
        champion_record = registry_sql.get_version(conn, champion_version, with_report=False) or {}
    split = champion_split(champion_record.get("training_config") or {})
    challenger_config = _read_training_config(artifact_dir)
    problem = split_mismatch(split, challenger_config)
    if problem:
        return RetrainOutcome("failed", f"not gated: {problem}", version, champion_version)
    try:
        splits = load_labeled_sets(Path(settings.data_path), seed=split["seed"], split_method=split["split_method"],
                                   limit_per_dataset=split.get("limit_per_dataset"))
    except DatasetError as exc:
        return RetrainOutcome("failed", f"cannot read the labeled sets: {exc}", version, champion_version)
    problem = data_mismatch(challenger_config, splits.fingerprints)
    if problem:
        return RetrainOutcome("failed", f"not gated: {problem}", version, champion_version)
    fingerprint = dev_fingerprint(splits.dev)
    if split.get("dev_fingerprint") and split["dev_fingerprint"] != fingerprint:
        return RetrainOutcome("failed", "the dev split's fingerprint differs from the champion's recorded one",
                              version, champion_version)
    try:
        guards, guards_missing = guard_sets(Path(settings.data_path), r.gate_guard_slices)
        eval_sets = {**splits.dev, **guards}
    except DatasetError as exc:
        return RetrainOutcome("failed", f"retrain.gate_guard_slices: {exc}", version, champion_version)
    latency_texts = [ex.text for exs in splits.dev.values() for ex in exs[:32]][:96] or list(SMOKE_TEXTS)
    champ = candidate(champion_version, champion_dir, eval_sets, latency_texts, smoke=False)
    chall = candidate(version, artifact_dir, eval_sets, latency_texts, smoke=True)
    gate_cfg = gate_config_from(settings)
    result = evaluate_gate(champ, chall, gate_cfg)
    report = build_report(champ, chall, result, gate_cfg, extra={
        "trigger": trigger, "eval_sizes": {k: len(v) for k, v in eval_sets.items()},
        "guard_slices_missing": guards_missing,
        "gate_split": {**split, "dev_fingerprint": fingerprint}})
    with engine.begin() as conn:
        registry_sql.set_report(conn, version, report)
    return _act_on_verdict(engine, settings, version, champion_version, result, report, by=by, why=trigger,
                           promote=True)


def regate(engine: Engine, settings: Any, version: str, *, by: str) -> RetrainOutcome:
    """Run the gate again on a registered ``candidate`` (``marketmood models gate VERSION``) from its stored artifact.

    Why: ``models register --promote`` registers first, so a gate that could not run (labeled sets or a guard slice
    unreadable, the champion's artifact unreachable, a crash) left a candidate that no command could gate again
    (registering it again is refused: versions are immutable). Only candidates: a rejected version lost a vote, and
    gating it until it passes would be shopping for a verdict. Not a retrain's challenger: its gate also votes on
    the analyst feedback held out in its run, which cannot be rebuilt here (run ``marketmood retrain`` instead).
    Raises :class:`registry.RegistryError` for a version it refuses to gate.
    """
    with engine.connect() as conn:
        record = registry_sql.get_version(conn, version, with_report=False)
    if record is None:
        raise registry.RegistryError(f"unknown model version {version!r}")
    if record["status"] != "candidate":
        raise registry.RegistryError(f"{version} is {record['status']}: only a candidate is gated (a rejected version "
                                     "lost a vote; a shadow, promoted or retired one is past the gate)")
    if (record.get("training_config") or {}).get("retrain"):
        raise registry.RegistryError(f"{version} is a retrain's challenger, judged with its run's feedback hold-out, "
                                     "which cannot be rebuilt: run `marketmood retrain` for a new challenger")
    artifact_dir = registry.fetch_artifact(engine, version, registry.model_cache_dir(settings))
    return gate_existing(engine, settings, version, artifact_dir, by=by, trigger="regate")


def _read_training_config(artifact_dir: Path) -> dict[str, Any]:
    """As ``read_training_config``, with an unreadable file taken as none (the gate then refuses it)."""
    try:
        return read_training_config(artifact_dir)
    except (OSError, ValueError):
        return {}
