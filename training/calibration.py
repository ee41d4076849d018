"""Probability calibration: one softmax temperature per head, expected calibration error, reliability plot.

Why: probabilities drive the sentiment index and alert thresholds, and fine-tuned transformers are usually
over-confident. Temperature scaling (Guo et al. 2017) divides logits by one scalar fitted by
negative log-likelihood on the selection split: argmax (and so accuracy) never changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar


def _log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(_log_softmax(logits, temperature))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-_log_softmax(logits, temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T > 0 minimising NLL of softmax(logits / T) (bounded scalar search in log T); 1.0 without rows."""
    if len(labels) == 0:
        return 1.0
    result = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                             bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(result.x))


def cross_fitted(logits: np.ndarray, labels: np.ndarray, folds: int = 2, seed: int = 13) -> dict[str, Any]:
    """Post-hoc calibration of a model that has no untouched selection split (it chose on its dev rows):
    the temperature is fitted on the other folds and judged on each fold in turn, so the reported "after"
    ECE never sees its own fit; the temperature to ship is fitted on all rows. Returns the shipped
    temperature, the per-fold temperatures, and the reliability curves before and after (pooled folds)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    parts = np.array_split(order, folds)
    calibrated = np.zeros((len(labels), logits.shape[1]))
    per_fold = []
    for k, held in enumerate(parts):
        fit_rows = np.concatenate([part for j, part in enumerate(parts) if j != k])
        temperature = fit_temperature(logits[fit_rows], labels[fit_rows])
        per_fold.append(round(temperature, 4))
        calibrated[held] = softmax(logits[held], temperature)
    temperature = fit_temperature(logits, labels)
    return {"temperature": temperature, "fold_temperatures": per_fold,
            "before": reliability(softmax(logits), labels), "after": reliability(calibrated, labels)}


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Top-label confidence vs accuracy in equal-width bins, and ECE (bin-size-weighted |acc - conf|)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        count = int(in_bin.sum())
        if count:
            acc, conf = float(correct[in_bin].mean()), float(confidence[in_bin].mean())
            ece += count / len(labels) * abs(acc - conf)
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": count, "accuracy": acc, "confidence": conf})
    return {"ece": float(ece), "bins": rows, "n": int(len(labels))}


def plot_reliability(curves: dict[str, dict[str, dict[str, Any]]], path: Path) -> Path:
    """One panel per head: accuracy vs confidence before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.5), squeeze=False)
    for ax, (head, variants) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
        for (name, curve), style in zip(variants.items(), ("o--", "s-")):
            xs = [b["confidence"] for b in curve["bins"]]
            ys = [b["accuracy"] for b in curve["bins"]]
            ax.plot(xs, ys, style, label=f"{name} (ECE {curve['ece']:.3f})")
        ax.set_title(f"{head} (dev, n={next(iter(variants.values()))['n']})")
        ax.set_xlabel("confidence (top label)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
