"""``marketmood retrain``: feedback-weighted fine-tune of a challenger, the promotion gate, registration.

Steps: take the cluster-wide retrain lock (skip if another replica holds it) -> make sure a champion
exists -> split feedback time-forward (the newest slice is held out for evaluation, never trained on) ->
train the challenger on base data + older feedback (weighted up) -> evaluate champion and challenger on
the same frozen dev sets + the held-out feedback on the CPU serving path -> gate -> store the version with
its report -> promote when it passed.
"""

from __future__ import annotations

import structlog
import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from models.artifact import read_info
from models.labels import SENTIMENT_LABELS, TOPIC_LABELS, sentiment_index, topic_index
from models.prediction import Classifier
from storage import feedback as feedback_sql
from storage import registry as registry_sql
from storage.feedback import FeedbackRow
from training import registry
from training.datasets import LabeledExample, load_labeled_sets, normalize_text
from training.gate import Candidate, GateConfig, build_report, evaluate_gate

log = structlog.get_logger(__name__)

FEEDBACK_SET = "feedback_recent"
REPORT_JSON = "gate_report.json"
REPORT_MD = "gate_report.md"
SMOKE_TEXTS = (
    "Shares plunge after the company cuts its full-year profit forecast",
    "Central bank holds rates steady, signals patience",
    "Record quarterly revenue beats analyst estimates; stock jumps 8%",
)


@dataclass(frozen=True)
class RetrainOutcome:
    status: str  # skipped | promoted | rejected | registered (passed, auto-promote off) | failed
    reason: str
    version: str | None = None
    champion: str | None = None
    report: dict[str, Any] | None = None


# ---------------------------------------------------------------- pure helpers


def to_example(row: FeedbackRow, weight: float) -> LabeledExample:
    return LabeledExample(
        text=row.text,
        sentiment=None if row.sentiment is None else sentiment_index(row.sentiment),
        topic=None if row.topic is None else topic_index(row.topic),
        weight=weight,
        source=f"feedback:{row.origin}",
    )


def split_feedback(
    rows: Sequence[FeedbackRow], *, holdout_fraction: float, weight: float, exclude_texts: set[str]
) -> tuple[list[LabeledExample], list[LabeledExample]]:
    """(train, holdout): the newest ``holdout_fraction`` is held out; no held-out or dev text is trained on.

    When one text was corrected more than once, the latest correction wins.
    """
    latest: dict[str, FeedbackRow] = {}
    for row in sorted(rows, key=lambda r: (r.created_at, r.id)):
        latest.pop(normalize_text(row.text), None)  # re-insert so dict order follows the latest correction time
        latest[normalize_text(row.text)] = row
    ordered = list(latest.values())
    n_holdout = math.floor(len(ordered) * holdout_fraction)
    train_rows, holdout_rows = ordered[: len(ordered) - n_holdout], ordered[len(ordered) - n_holdout :]
    blocked = exclude_texts | {normalize_text(r.text) for r in holdout_rows}
    train = [to_example(r, weight) for r in train_rows if normalize_text(r.text) not in blocked]
    return train, [to_example(r, 1.0) for r in holdout_rows]


def check_predictions(predictions: Sequence[Any], n_texts: int, version: str) -> list[str]:
    """Problems with a batch of predictions (empty list = valid)."""
    problems: list[str] = []
    if len(predictions) != n_texts:
        problems.append(f"{len(predictions)} predictions for {n_texts} texts")
    for i, p in enumerate(predictions):
        probs = (p.p_negative, p.p_neutral, p.p_positive)
        if not all(0.0 <= x <= 1.0 and math.isfinite(x) for x in probs) or abs(sum(probs) - 1.0) > 1e-3:
            problems.append(f"text {i}: sentiment probabilities {probs} are not a distribution")
        if p.sentiment not in SENTIMENT_LABELS or p.topic not in TOPIC_LABELS:
            problems.append(f"text {i}: unknown label {p.sentiment!r}/{p.topic!r}")
        if not 0.0 <= p.topic_confidence <= 1.0:
            problems.append(f"text {i}: topic confidence {p.topic_confidence}")
        if p.model_version != version:
            problems.append(f"text {i}: model_version {p.model_version!r} != {version!r}")
    return problems


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


def evaluate_sets(classifier: Classifier, sets: dict[str, list[LabeledExample]]) -> dict[str, dict[str, Any]]:
    from training.evaluation import evaluate

    return {name: evaluate(classifier, examples) for name, examples in sets.items() if examples}


def candidate(version: str, artifact_dir: Path, sets: dict[str, list[LabeledExample]], latency_texts: Sequence[str],
              *, smoke: bool) -> Candidate:
    classifier = load_cpu_classifier(artifact_dir)
    metrics = evaluate_sets(classifier, sets)
    latency = measure_latency(classifier, latency_texts)
    ok, detail = smoke_test(artifact_dir) if smoke else (True, "not required for the champion")
    return Candidate(version, read_info(artifact_dir).labels, metrics, latency, ok, detail)


# ---------------------------------------------------------------- orchestration


@contextlib.contextmanager
def retrain_lock(engine: Engine) -> Iterator[bool]:
    """Yield True while this process holds the cluster-wide retrain lock, False if another one does.

    A session-level advisory lock on a dedicated autocommit connection: it is never "idle in transaction"
    during a long training run, and a crashed process frees it when its connection drops.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        acquired = registry_sql.try_advisory_lock(conn)
        try:
            yield acquired
        finally:
            if acquired:
                registry_sql.advisory_unlock(conn)


def gate_config_from(settings: Any) -> GateConfig:
    r = settings.retrain
    return GateConfig(macro_f1_tolerance=r.macro_f1_tolerance, latency_budget_ms=r.latency_budget_ms,
                      min_examples=r.gate_min_examples)


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
    cache_dir = Path(r.model_cache_dir or home / "models")
    work_dir = Path(r.work_dir or home / "retrain")

    champion_version = registry.ensure_champion(engine)
    if champion_version is None:
        return RetrainOutcome("failed", "no champion: the registry is empty and no bundled model exists")
    champion_dir = registry.fetch_artifact(engine, champion_version, cache_dir)

    seed = int(train_overrides.get("seed", 13))
    limit = train_overrides.get("limit_per_dataset", r.limit_per_dataset)
    data_path = Path(train_overrides.get("data_path", settings.data_path))
    splits = load_labeled_sets(data_path, seed=seed, limit_per_dataset=limit)
    with engine.connect() as conn:
        feedback_until = feedback_sql.latest_feedback_time(conn)
        rows = feedback_sql.fetch_feedback(conn, until=feedback_until)
    dev_texts = {normalize_text(ex.text) for exs in splits.dev.values() for ex in exs}
    extra, holdout = split_feedback(rows, holdout_fraction=r.feedback_holdout_fraction,
                                    weight=r.feedback_weight, exclude_texts=dev_texts)
    eval_sets = {**splits.dev, FEEDBACK_SET: holdout}

    version = train_overrides.pop("version", None) or "mm-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
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
        "extra_examples": tuple(extra),
        # The hold-out is scored after training: keep it out of the base datasets' train rows too.
        "exclude_texts": tuple(ex.text for ex in holdout),
    })
    log.info("retrain.train", version=version, champion=champion_version, feedback_train=len(extra),
             feedback_holdout=len(holdout), trigger=trigger)
    challenger_dir = train(config, progress=False)

    latency_texts = [ex.text for exs in splits.dev.values() for ex in exs[:32]][:96] or list(SMOKE_TEXTS)
    champ = candidate(champion_version, champion_dir, eval_sets, latency_texts, smoke=False)
    chall = candidate(version, challenger_dir, eval_sets, latency_texts, smoke=True)
    gate_cfg = gate_config_from(settings)
    result = evaluate_gate(champ, chall, gate_cfg)
    report = build_report(champ, chall, result, gate_cfg, extra={
        "trigger": trigger,
        "eval_sizes": {k: len(v) for k, v in eval_sets.items()},
        "feedback": {"train": len(extra), "holdout": len(holdout), "weight": r.feedback_weight,
                     "until": feedback_until.isoformat() if feedback_until else None},
    })
    (challenger_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n")
    (challenger_dir / REPORT_MD).write_text(report["markdown"])

    retrain_record = {"retrain": {
        "trigger": trigger, "by": by, "champion": champion_version,
        "feedback_until": feedback_until.isoformat() if feedback_until else None,
        "feedback_train": len(extra), "feedback_holdout": len(holdout),
    }}
    registry.register_artifact(engine, challenger_dir, status="candidate", report=report, extra_config=retrain_record,
                               slim=not r.registry_include_weights)
    should_promote = r.auto_promote if promote is None else promote
    if not result.passed:
        with engine.begin() as conn:
            registry_sql.set_status(conn, version, "rejected")
        reason = "; ".join(f"{c.name}: {c.detail}" for c in result.failures)
        log.warning("retrain.rejected", version=version, failures=reason)
        return RetrainOutcome("rejected", reason, version, champion_version, report)
    if not should_promote:
        return RetrainOutcome("registered", "passed the gate; promotion left to an operator", version,
                              champion_version, report)
    registry.promote(engine, version, by=by, reason=f"retrain ({trigger}): passed the gate")
    log.info("retrain.promoted", version=version, previous=champion_version)
    return RetrainOutcome("promoted", "passed the gate", version, champion_version, report)
