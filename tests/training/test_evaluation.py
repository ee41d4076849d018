"""Bootstrap intervals of the evaluation metrics: the class set macro-F1 averages over, and cluster resampling."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation import bootstrap_intervals, task_metrics


def _width(ci: dict[str, list[float]], key: str) -> float:
    return ci[key][1] - ci[key][0]


def test_macro_f1_intervals_average_over_the_full_samples_classes():
    """A model that never predicts the one minority row scores macro-F1 0.495 (the minority's F1 is 0). Resamples
    that happen to miss that row used to drop the class and score 1.0, so the interval ran up to 1.0, far above
    every value the point estimate's definition can give on this data."""
    y, p = [0] * 49 + [1], [0] * 50
    point = task_metrics("sentiment", y, p)["macro_f1"]
    ci = bootstrap_intervals("sentiment", y, p)
    assert point == pytest.approx(0.495, abs=1e-3)
    assert ci["macro_f1"][0] <= point <= ci["macro_f1"][1] <= 0.5, ci
    assert task_metrics("sentiment", y, p, intervals=True)["ci95"] == ci


def _sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return y, np.where(rng.random(n) < 0.8, y, rng.integers(0, 3, n))


def test_cluster_bootstrap_is_not_fooled_by_duplicated_rows():
    """Every row twice (each pair a near-duplicate cluster) holds no more evidence than the rows once: the cluster
    bootstrap's interval keeps its width, the row bootstrap's shrinks by ~1/sqrt(2)."""
    y, p = _sample(400)
    once = bootstrap_intervals("sentiment", y, p)
    yy, pp = np.repeat(y, 2), np.repeat(p, 2)
    rows = bootstrap_intervals("sentiment", yy, pp)
    clusters = bootstrap_intervals("sentiment", yy, pp, clusters=np.repeat(np.arange(len(y)), 2).tolist())
    for key in ("accuracy", "macro_f1"):
        assert _width(rows, key) < 0.8 * _width(once, key), (key, rows, once)
        assert _width(clusters, key) == pytest.approx(_width(once, key), rel=0.15), (key, clusters, once)


def test_singleton_clusters_are_the_row_bootstrap_and_ids_may_be_texts():
    y, p = _sample(600, seed=2)
    rows = bootstrap_intervals("sentiment", y, p)
    singletons = bootstrap_intervals("sentiment", y, p, clusters=[f"text {i}" for i in range(len(y))])
    for key in ("accuracy", "macro_f1"):
        assert _width(singletons, key) == pytest.approx(_width(rows, key), rel=0.15)
    assert bootstrap_intervals("sentiment", y, p, clusters=list(range(len(y)))) == bootstrap_intervals(
        "sentiment", y, p, clusters=list(range(len(y))))  # seeded
    with pytest.raises(ValueError, match="cluster ids must name every row"):
        bootstrap_intervals("sentiment", y, p, clusters=[0, 1])


def test_evaluate_resamples_near_duplicate_clusters_when_given_their_key():
    """`marketmood evaluate` and the card: a tweet re-posted with another t.co link is one piece of evidence, so
    with a cluster key the intervals of a set whose every text appears twice stay as wide as the set's own."""
    from types import SimpleNamespace

    from training.datasets import LabeledExample, near_duplicate_key
    from training.evaluation import evaluate

    labels = ["negative", "neutral", "positive"]
    y, p = _sample(300, seed=3)

    class Fixed:  # predicts from the text's number: the prediction of row i is p[i], for both copies
        def classify(self, texts):
            return [SimpleNamespace(sentiment=labels[p[int(t.split()[1])]]) for t in texts]

    once = [LabeledExample(text=f"row {i} https://t.co/a", sentiment=int(y[i])) for i in range(300)]
    twice = once + [LabeledExample(text=f"row {i} https://t.co/b", sentiment=int(y[i])) for i in range(300)]
    base = evaluate(Fixed(), once, intervals=True)["sentiment"]["ci95"]
    rows = evaluate(Fixed(), twice, intervals=True)["sentiment"]["ci95"]
    clustered = evaluate(Fixed(), twice, intervals=True, cluster_key=near_duplicate_key)["sentiment"]["ci95"]
    assert _width(rows, "accuracy") < 0.85 * _width(base, "accuracy")  # rows: as if 600 independent texts
    assert _width(clustered, "accuracy") == pytest.approx(_width(base, "accuracy"), rel=0.15)
