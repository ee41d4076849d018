"""Evaluation: per-task accuracy, macro-F1 and per-class precision/recall/F1, plus confusion matrices.

Works on label indices so it serves both the training loop (torch logits) and any ``Classifier``
(the ONNX engine, a challenger in the promotion gate).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from models.prediction import Classifier, InvalidTextError
from training.datasets import LabeledExample
from training.gate import resampled_cells

TASK_LABELS: dict[str, tuple[str, ...]] = {"sentiment": SENTIMENT_LABELS, "topic": TOPIC_LABELS}


def bootstrap_intervals(
    task: str, y_true: Sequence[int], y_pred: Sequence[int], n_boot: int = 1000, seed: int = 0, level: float = 0.95,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of accuracy and macro-F1 (rows resampled with replacement).

    Macro-F1 is taken over the classes present in the full sample's gold labels, in every resample, as in
    ``task_metrics`` and the gate's ``paired_bootstrap``: a resample that misses a rare class scores 0 F1 for it
    rather than dropping it (which pulled the interval of a model that never predicts the class up to 1.0).
    ``clusters`` (one id per row, e.g. ``training.datasets.near_duplicate_key`` of its text) resamples whole
    clusters instead of rows (near-duplicates are not independent evidence); None keeps the row bootstrap.
    Vectorised confusion counts: 1000 resamples of 1,700 rows take well under a second.
    """
    k = len(TASK_LABELS[task])
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if len(t) == 0:
        return {"accuracy": [float("nan")] * 2, "macro_f1": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    if clusters is None:
        idx = rng.integers(0, len(t), size=(n_boot, len(t)))
        flat = (t[idx] * k + p[idx]) + (np.arange(n_boot) * k * k)[:, None]
        cm = np.bincount(flat.ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k).astype(float)
    else:
        cells, _, draws, _ = resampled_cells(t * k + p, clusters, n_boot, rng)
        cm = np.zeros((n_boot, k * k))
        cm[:, cells] = draws
        cm = cm.reshape(n_boot, k, k)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    gold, pred = cm.sum(axis=2), cm.sum(axis=1)
    f1 = np.where(gold + pred > 0, 2 * tp / np.clip(gold + pred, 1e-12, None), 0.0)
    present = np.bincount(t, minlength=k) > 0  # the full sample's classes, not each resample's
    macro = (f1 * present).sum(axis=1) / present.sum()
    acc = tp.sum(axis=1) / np.clip(cm.sum(axis=(1, 2)), 1, None)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {"accuracy": [float(np.percentile(acc, lo)), float(np.percentile(acc, hi))],
            "macro_f1": [float(np.percentile(macro, lo)), float(np.percentile(macro, hi))]}


def task_metrics(task: str, y_true: Sequence[int], y_pred: Sequence[int], intervals: bool = False,
                 clusters: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class P/R/F1/support for one task, JSON-ready (+ bootstrap 95% CIs, over
    ``clusters`` when given: see ``bootstrap_intervals``)."""
    labels = TASK_LABELS[task]
    present = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=present, zero_division=0
    )
    # Macro-F1 over the classes that occur in the gold labels (small dev sets miss rare topics).
    in_gold = sorted(set(int(y) for y in y_true))
    return {
        "task": task,
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=in_gold, average="macro", zero_division=0)),
        "per_class": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in present
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=present).tolist(),
        **({"ci95": bootstrap_intervals(task, y_true, y_pred, clusters=clusters)} if intervals else {}),
    }


def split_by_task(examples: Sequence[LabeledExample]) -> dict[str, list[LabeledExample]]:
    out: dict[str, list[LabeledExample]] = {"sentiment": [], "topic": []}
    for ex in examples:
        if ex.sentiment is not None:
            out["sentiment"].append(ex)
        if ex.topic is not None:
            out["topic"].append(ex)
    return {task: exs for task, exs in out.items() if exs}


def evaluate(
    classifier: Classifier, examples: Sequence[LabeledExample], batch_size: int = 256, intervals: bool = False,
    cluster_key: Callable[[str], Hashable] | None = None,
) -> dict[str, Any]:
    """Score ``examples`` with any Classifier; returns ``{task: task_metrics}`` for the tasks labeled.
    ``cluster_key`` (e.g. ``training.datasets.near_duplicate_key``, for sets split by cluster): the intervals
    resample whole clusters of rows sharing a key."""
    results: dict[str, Any] = {}
    for task, exs in split_by_task(examples).items():
        predictions = []
        for start in range(0, len(exs), batch_size):
            batch = [ex.text for ex in exs[start : start + batch_size]]
            try:
                predictions.extend(classifier.classify(batch))
            except InvalidTextError as exc:  # name the text: the index of a batch means nothing to the user
                raise InvalidTextError(start + exc.index, f"{exc.reason}: {batch[exc.index][:80]!r}") from None
        if task == "sentiment":
            y_true = [ex.sentiment for ex in exs]
            y_pred = [SENTIMENT_LABELS.index(p.sentiment) for p in predictions]
        else:
            y_true = [ex.topic for ex in exs]
            y_pred = [TOPIC_LABELS.index(p.topic) for p in predictions]
        clusters = [cluster_key(ex.text) for ex in exs] if cluster_key is not None and intervals else None
        results[task] = task_metrics(task, y_true, y_pred, intervals=intervals, clusters=clusters)  # type: ignore[arg-type]
    return results


def plot_confusion_matrix(metrics: dict[str, Any], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix PNG (counts annotated) for a card or a report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = TASK_LABELS[metrics["task"]]
    matrix = np.asarray(metrics["confusion_matrix"], dtype=float)
    keep = [i for i in range(len(labels)) if matrix[i].sum() > 0 or matrix[:, i].sum() > 0]
    matrix = matrix[np.ix_(keep, keep)]
    names = [labels[i] for i in keep]
    normalised = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}", fontsize=10)
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                if matrix[i, j]:
                    color = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def classification_report_text(metrics: dict[str, Any]) -> str:
    """A plain-text report like sklearn's, from our metrics dict (for the CLI)."""
    lines = [f"{'class':<30} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for name, row in metrics["per_class"].items():
        if row["support"] == 0:
            continue
        lines.append(f"{name:<30} {row['precision']:>9.3f} {row['recall']:>9.3f} {row['f1']:>9.3f} {row['support']:>8}")
    lines.append("")
    ci = metrics.get("ci95", {})
    for label, key in (("accuracy", "accuracy"), ("macro F1", "macro_f1")):
        interval = f"  95% CI [{ci[key][0]:.3f}, {ci[key][1]:.3f}]" if key in ci else ""
        lines.append(f"{label:<30} {metrics[key]:>29.3f} {metrics['n']:>8}{interval}")
    return "\n".join(lines)
