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
# The base set each guard slice is a subset of: valid.csv is PhraseBank's dev file, so its all-agree rows are 226 of
# the 485 rows the phrasebank base set votes on, and the two votes share those rows.
GUARD_WITHIN: dict[str, str] = {"phrasebank_allagree": "phrasebank"}


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


@dataclass(frozen=True)
class RetrainSimResult:
    reject_rate: float  # any statistical vote of base sets or guard slices rejects
    replications: int
    base_reject: float  # base-set votes (per set, per class, pooled), as ``simulate_gate``'s reject_rate
    guard_reject: dict[str, float]


def simulate_retrain_gate(
    sets: Mapping[str, tuple[Sequence[int], float]], guards: Mapping[str, tuple[Sequence[int], float]],
    config: GateConfig, *, churn: float, replications: int, seed: int = 0,
    within: Mapping[str, str] = GUARD_WITHIN,
) -> RetrainSimResult:
    """False-reject rate of an equal challenger under every statistical vote a retrain without a voting feedback
    hold-out takes: the base sets' (as ``simulate_gate``) and the guard slices' (as ``simulate_guard``) together.

    A guard slice named in ``within`` is simulated as the first rows of its base set (the rest of that set gets
    the counts and the accuracy that keep the set's totals), so both votes see the same pair on those rows;
    other guard slices are independent sets. Each vote alone is a 95 % interval, so the rejections add up.
    The feedback hold-out's superiority vote (lower bound > 0) is not simulated: when it votes it rejects an
    equal challenger ~97.5 % of the time by construction.
    """
    rng = np.random.default_rng(seed)
    hosts = {within[g]: g for g in guards if within.get(g) in sets}
    rejected = base_rejects = 0
    guard_rejects = dict.fromkeys(guards, 0)
    for _ in range(replications):
        samples, bad, guard_bad = [], False, False
        pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name, (counts, acc) in sets.items():
            if name in hosts:
                g_counts, g_acc = guards[hosts[name]]
                rest = [c - gc for c, gc in zip(counts, g_counts, strict=True)]
                rest_acc = (acc * sum(counts) - g_acc * sum(g_counts)) / sum(rest)
                inner, outer = (simulate_pair(g_counts, g_acc, churn, 0.0, rng),
                                simulate_pair(rest, rest_acc, churn, 0.0, rng))
                pairs[hosts[name]] = inner
                y, a, b = (np.concatenate([i, o]) for i, o in zip(inner, outer, strict=True))
            else:
                y, a, b = simulate_pair(counts, acc, churn, 0.0, rng)
            if sum(counts) < config.min_examples:
                continue
            cmp = paired_bootstrap(y, a, b, len(counts), samples=config.bootstrap_samples,
                                   confidence=config.confidence, rng=rng)
            bad |= set_rejected(cmp, counts, config)
            samples.append(cmp.samples)
        _, lower, _ = pooled_interval(samples, config.confidence)
        bad |= not pooled_passes(lower, config)
        for name, (counts, acc) in guards.items():
            if sum(counts) < config.min_guard_examples:
                continue
            y, a, b = pairs[name] if name in pairs else simulate_pair(counts, acc, churn, 0.0, rng)
            cmp = paired_bootstrap(y, a, b, len(counts), samples=config.bootstrap_samples,
                                   confidence=config.confidence, rng=rng)
            g_bad = not guard_passes(cmp, config)
            guard_rejects[name] += g_bad
            guard_bad |= g_bad
        base_rejects += bad
        rejected += bad or guard_bad
    return RetrainSimResult(rejected / replications, replications, base_rejects / replications,
                            {k: v / replications for k, v in guard_rejects.items()})


def simulate_feedback_vote(counts: Sequence[int], accuracy: float, config: GateConfig, *, churn: float,
                           replications: int, seed: int = 0) -> float:
    """Share of equal challengers (``churn``, no loss) the feedback hold-out's superiority vote rejects (lower bound
    of the difference not above 0). A hold-out that votes (``min_feedback_examples`` rows, ``accuracy`` at least
    ``min_feedback_confirmations``) asks the challenger to be better there, so this is ~97.5 %, not ~5 %."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(replications):
        y, a, b = simulate_pair(counts, accuracy, churn, 0.0, rng)
        cmp = paired_bootstrap(y, a, b, len(counts), samples=config.bootstrap_samples, confidence=config.confidence,
                               rng=rng)
        rejected += not cmp.lower > 0.0
    return rejected / replications


# A feedback hold-out as small as votes (100 rows, sentiment) and a champion that confirms 70 % of it.
FEEDBACK_SET: tuple[tuple[int, ...], float] = ((30, 45, 25), 0.7)


def main(argv: Sequence[str] | None = None) -> None:
    """Combined false-reject rates of an equal challenger: ``nice -n 10 python -m training.gate_sim``."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--reps", type=int, default=400, help="Simulated replications per churn.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples per set.")
    parser.add_argument("--churn", type=float, nargs="+", default=[0.02, 0.03, 0.04])
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args(argv)
    config = GateConfig(bootstrap_samples=args.bootstrap)
    base = ", ".join(f"{k} {sum(c)}" for k, (c, _) in SHIPPED_SETS.items())
    guards = ", ".join(f"{k} {sum(c)} (rows of {GUARD_WITHIN.get(k, 'no base set')})"
                       for k, (c, _) in GUARD_SETS.items())
    print(f"equal challenger, {args.reps} replications x {args.bootstrap} resamples; base sets {base}; guard slices "
          f"{guards}; feedback hold-out {sum(FEEDBACK_SET[0])} rows, {FEEDBACK_SET[1]:.0%} confirmations")
    print(f"{'churn':>6} {'base votes':>11} {'guard':>7} {'base+guard':>11} {'feedback vote':>14} {'s':>5}")
    for churn in args.churn:
        started = time.perf_counter()
        both = simulate_retrain_gate(SHIPPED_SETS, GUARD_SETS, config, churn=churn, replications=args.reps,
                                     seed=args.seed)
        feedback = simulate_feedback_vote(*FEEDBACK_SET, config, churn=churn, replications=args.reps, seed=args.seed)
        guard = max(both.guard_reject.values(), default=0.0)
        print(f"{churn:>6.0%} {both.base_reject:>11.1%} {guard:>7.1%} {both.reject_rate:>11.1%} {feedback:>14.1%} "
              f"{time.perf_counter() - started:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
