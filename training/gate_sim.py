"""Simulated champion/challenger pairs for measuring the gate's error rates (tests and bench_gate.py).

A pair is built the way a retrain changes a model: the challenger copies the champion's predictions and
then changes a share of them (``churn``): it breaks some rows the champion got right and fixes an equal
expected number it got wrong, so both models have the same expected quality. A "worse" challenger also
breaks an extra share of correct rows, calibrated so its expected macro-F1 is ``drop`` lower on every set.
The gold labels follow the class counts of the shipped dev sets (``SHIPPED_SETS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from training.gate import (
    GateConfig,
    PairedComparison,
    base_set_passes,
    class_delta_passes,
    guard_passes,
    guarded_class_deltas,
    macro_f1,
    negative_recall_passes,
    paired_bootstrap,
    pooled_interval,
    pooled_passes,
)

# Class counts of the dev splits and the CPU-path accuracy of the model bundled when the gate's error rates were
# first measured (BENCHMARKS.md, "Gate error rates by simulation"); kept fixed so those rates stay comparable.
# Today's bundled model: 3-5 points higher on PhraseBank and tweet sentiment, 2-5 lower on topic and FiQA.
SHIPPED_SETS: dict[str, tuple[tuple[int, ...], float]] = {
    "phrasebank": ((60, 288, 137), 0.84),
    "tweet_sentiment": ((144, 618, 192), 0.84),
    "tweet_topic": ((26, 84, 354, 32, 36, 99, 52, 62, 17, 156, 7, 4, 49, 47, 182, 50, 98, 50, 212, 82), 0.91),
    "fiqa": ((54, 14, 108), 0.72),
}

# PhraseBank's all-agree dev rows (valid.csv agreement=100: 30 negative, 139 neutral, 57 positive) and the bundled
# model's CPU-path accuracy there (0.978): the default guard slice.
GUARD_SETS: dict[str, tuple[tuple[int, ...], float]] = {"phrasebank_allagree": ((30, 139, 57), 0.978)}


def simulate_pair(counts: Sequence[int], accuracy: float, churn: float, extra: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gold, champion, challenger) label arrays for one simulated set."""
    k = len(counts)
    y = np.repeat(np.arange(k), counts)
    n = len(y)
    correct = rng.random(n) < accuracy
    champion = np.where(correct, y, (y + rng.integers(1, k, n)) % k)
    challenger = champion.copy()
    broken = correct & (rng.random(n) < (churn / 2 + extra) / accuracy)
    fixed = ~correct & (rng.random(n) < (churn / 2) / (1 - accuracy))
    challenger[broken] = (y[broken] + rng.integers(1, k, int(broken.sum()))) % k
    challenger[fixed] = y[fixed]
    return y, champion, challenger


def calibrate_extra(counts: Sequence[int], accuracy: float, drop: float, *, seed: int = 0, scale: int = 40) -> float:
    """The extra broken share that lowers expected macro-F1 by ``drop`` (bisection on a large replica)."""
    big = [c * scale for c in counts]
    lo, hi = 0.0, min(0.5, accuracy)
    for _ in range(18):
        mid = (lo + hi) / 2
        rng = np.random.default_rng(seed)
        y, a, b = simulate_pair(big, accuracy, 0.0, mid, rng)
        k = len(counts)
        if macro_f1(y, a, k) - macro_f1(y, b, k) < drop:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class SimResult:
    reject_rate: float
    replications: int
    per_set_reject: dict[str, float]
    pooled_reject: float


def set_rejected(cmp: PairedComparison, counts: Sequence[int], config: GateConfig) -> bool:
    """Whether the gate's votes on one simulated base set reject it: its interval, its worst guarded class and,
    on a 3-class set (sentiment: class 0 is negative, the champion's calls informative), negative recall."""
    guarded = guarded_class_deltas(cmp, config)
    rejected = not base_set_passes(cmp, config) or (
        bool(guarded) and not class_delta_passes(min(guarded.values()), config))
    if cmp.negative_recall is not None and len(counts) == 3 and counts[0] >= config.min_class_support:
        old, new = cmp.negative_recall
        rejected |= not negative_recall_passes(old, new, config)
    return rejected


def simulate_gate(
    sets: Mapping[str, tuple[Sequence[int], float]], config: GateConfig, *, churn: float, drop: float,
    replications: int, seed: int = 0,
) -> SimResult:
    """Share of simulated challengers the gate's statistical votes reject (base sets, per-set + pooled +
    per-class guardrails; label maps, latency and smoke test are not simulated)."""
    rng = np.random.default_rng(seed)
    extras = {name: (calibrate_extra(c, acc, drop) if drop > 0 else 0.0) for name, (c, acc) in sets.items()}
    rejected = 0
    per_set = dict.fromkeys(sets, 0)
    pooled_rejects = 0
    for _ in range(replications):
        samples, bad = [], False
        for name, (counts, acc) in sets.items():
            if sum(counts) < config.min_examples:
                continue
            y, a, b = simulate_pair(counts, acc, churn, extras[name], rng)
            cmp = paired_bootstrap(y, a, b, len(counts), samples=config.bootstrap_samples,
                                   confidence=config.confidence, rng=rng)
            set_bad = set_rejected(cmp, counts, config)
            per_set[name] += set_bad
            bad |= set_bad
            samples.append(cmp.samples)
        _, lower, _ = pooled_interval(samples, config.confidence)
        pooled_bad = not pooled_passes(lower, config)
        pooled_rejects += pooled_bad
        rejected += bad or pooled_bad
    return SimResult(rejected / replications, replications,
                     {k: v / replications for k, v in per_set.items() if sum(sets[k][0]) >= config.min_examples},
                     pooled_rejects / replications)


def simulate_guard(counts: Sequence[int], accuracy: float, config: GateConfig, *, churn: float, drop: float,
                   replications: int, seed: int = 0) -> float:
    """Share of simulated challengers a guard slice's vote rejects (upper bound below ``-guard_delta``): with
    ``drop`` 0 its false-reject rate, else its power against a challenger ``drop`` macro-F1 worse on the slice."""
    rng = np.random.default_rng(seed)
    extra = calibrate_extra(counts, accuracy, drop) if drop > 0 else 0.0
    rejected = 0
    for _ in range(replications):
        y, a, b = simulate_pair(counts, accuracy, churn, extra, rng)
        cmp = paired_bootstrap(y, a, b, len(counts), samples=config.bootstrap_samples, confidence=config.confidence,
                               rng=rng)
        rejected += not guard_passes(cmp, config)
    return rejected / replications
