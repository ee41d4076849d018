"""Promotion gate: the paired bootstrap, every rule on hand-built predictions, and its error rates by simulation.

The simulation (``training.gate_sim``) replays the shipped dev sets' class counts and the bundled model's
accuracy; a challenger changes ``churn`` of the champion's predictions (equal quality in expectation), a
worse one also loses 2 macro-F1 points on every set. Operating point of this test: 3 % churn, i.e. the two
models disagree on ~3 % of rows. Above ~5 % churn the shipped sets are too small for 5 %/95 % both ways
(see BENCHMARKS.md, bench_gate.py): the gate then errs towards rejecting.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from models.labels import label_maps
from training.gate import Candidate, GateConfig, build_report, evaluate_gate, macro_f1, paired_bootstrap
from training.gate_sim import (
    GUARD_SETS,
    SHIPPED_SETS,
    calibrate_extra,
    set_rejected,
    simulate_gate,
    simulate_guard,
    simulate_pair,
)

CONFIG = GateConfig(bootstrap_samples=1000, latency_budget_ms=20.0)
RNG_SEED = 7


def _sets(churn: float = 0.0, extra: float = 0.0, feedback_n: int = 0, seed: int = RNG_SEED):
    """{set: {task: (gold, champion, challenger)}} from simulated pairs of the shipped sizes."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, task in (("phrasebank", "sentiment"), ("tweet_sentiment", "sentiment"), ("tweet_topic", "topic")):
        counts, acc = SHIPPED_SETS[name]
        out[name] = {task: simulate_pair(counts, acc, churn, extra, rng)}
    if feedback_n:
        y = rng.integers(0, 3, feedback_n)
        champ = np.where(rng.random(feedback_n) < 0.5, y, (y + 1) % 3)  # 50 % confirmations
        chall = np.where(rng.random(feedback_n) < 0.9, y, champ)
        out["feedback_recent"] = {"sentiment": (y, champ, chall)}
    return out


def _candidates(sets, *, labels=None, latency=5.0, smoke=True):
    champ_pred, chall_pred = {}, {}
    for name, tasks in sets.items():
        for task, (y, a, b) in tasks.items():
            champ_pred.setdefault(name, {})[task] = (y.tolist(), a.tolist())
            chall_pred.setdefault(name, {})[task] = (y.tolist(), b.tolist())
    metrics = {name: {task: {"n": len(y)} for task, (y, _, _) in tasks.items()} for name, tasks in sets.items()}
    champion = Candidate("v1", label_maps(), metrics, 5.0, predictions=champ_pred)
    challenger = Candidate("v2", labels or label_maps(), metrics, latency, smoke, "ok" if smoke else "broken",
                           predictions=chall_pred)
    return champion, challenger


def test_paired_bootstrap_matches_the_point_estimate_and_is_zero_for_identical_models():
    rng = np.random.default_rng(0)
    y, a, b = simulate_pair((60, 288, 137), 0.84, 0.05, 0.0, rng)
    cmp = paired_bootstrap(y, a, b, 3, samples=500)
    assert cmp.diff == pytest.approx(macro_f1(y, b, 3) - macro_f1(y, a, 3))
    assert cmp.lower <= cmp.diff <= cmp.upper and cmp.se > 0
    assert cmp.disagreement == pytest.approx(float(np.mean(a != b)))
    same = paired_bootstrap(y, a, a, 3, samples=500)
    assert (same.diff, same.lower, same.upper, same.disagreement) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap(y, a[:-1], b, 3)


def test_equal_challenger_passes_and_every_statistical_check_is_reported():
    champ, chall = _candidates(_sets(churn=0.02))
    result = evaluate_gate(champ, chall, CONFIG)
    assert result.passed, result.failures
    names = {c.name for c in result.checks}
    assert {"label_maps", "paired_macro_f1[phrasebank/sentiment]", "paired_macro_f1[tweet_topic/topic]",
            "pooled_macro_f1[base]", "class_f1[tweet_topic/topic]", "negative_recall[phrasebank/sentiment]",
            "latency", "smoke_test"} <= names
    assert result.comparisons["pooled_base"]["sets"] == ["phrasebank/sentiment", "tweet_sentiment/sentiment",
                                                        "tweet_topic/topic"]


def test_a_clearly_worse_challenger_is_rejected_by_the_pooled_vote():
    extra = calibrate_extra(*SHIPPED_SETS["tweet_sentiment"], drop=0.03)
    champ, chall = _candidates(_sets(churn=0.02, extra=extra))
    result = evaluate_gate(champ, chall, CONFIG)
    assert not result.passed
    assert "pooled_macro_f1[base]" in {c.name for c in result.failures}


def test_a_collapsed_class_fails_its_guardrail_even_when_macro_f1_barely_moves():
    sets = _sets(churn=0.0)
    y, a, _ = sets["tweet_topic"]["topic"]
    b = a.copy()
    victim = np.flatnonzero(y == 5)[:40]  # Earnings (99 rows): 40 of them called Markets now
    b[victim] = 15
    sets["tweet_topic"]["topic"] = (y, a, b)
    result = evaluate_gate(*_candidates(sets), CONFIG)
    failed = {c.name: c for c in result.failures}
    detail = failed["class_f1[tweet_topic/topic]"].detail
    assert "'Markets'" in detail or "'Earnings'" in detail  # the flooded class loses precision, the victim recall


def test_small_sets_do_not_vote_and_no_voting_base_set_fails():
    rng = np.random.default_rng(1)
    counts, acc = SHIPPED_SETS["fiqa"]  # 176 rows < 300
    y, a, b = simulate_pair(counts, acc, 0.2, 0.1, rng)
    result = evaluate_gate(*_candidates({"fiqa": {"sentiment": (y, a, b)}}), CONFIG)
    fiqa = next(c for c in result.checks if c.name == "paired_macro_f1[fiqa/sentiment]")
    assert fiqa.passed and not fiqa.votes and "informational only: 176 rows < 300" in fiqa.detail
    assert [c.name for c in result.failures] == ["pooled_macro_f1[base]"]


def test_feedback_votes_only_with_confirmations_and_then_needs_a_positive_lower_bound():
    sets = _sets(churn=0.02, feedback_n=400)
    result = evaluate_gate(*_candidates(sets), CONFIG)
    fb = next(c for c in result.checks if c.name == "feedback_macro_f1[feedback_recent/sentiment]")
    assert fb.votes and fb.passed and "lower bound must be > 0" in fb.detail  # the challenger fixed 90 %
    # The same challenger judged on a hold-out made only of the champion's mistakes: no vote (biased).
    y, a, b = sets["feedback_recent"]["sentiment"]
    wrong = a != y
    sets["feedback_recent"]["sentiment"] = (y[wrong], a[wrong], b[wrong])
    biased = evaluate_gate(*_candidates(sets), CONFIG)
    fb = next(c for c in biased.checks if c.name == "feedback_macro_f1[feedback_recent/sentiment]")
    assert fb.passed and not fb.votes and "0% confirmations" in fb.detail
    # A challenger no better than the champion on the feedback fails the feedback vote.
    sets["feedback_recent"]["sentiment"] = (y, a, a)
    assert "feedback_macro_f1[feedback_recent/sentiment]" in {c.name for c in evaluate_gate(
        *_candidates(sets), CONFIG).failures}


def test_model_checks_and_mismatched_rows_fail():
    labels = copy.deepcopy(label_maps())
    labels["sentiment"] = ["negative", "positive", "neutral"]
    sets = _sets(churn=0.02)
    result = evaluate_gate(*_candidates(sets, labels=labels, latency=25.0, smoke=False), CONFIG)
    assert {c.name for c in result.failures} == {"label_maps", "latency", "smoke_test"}
    champ, chall = _candidates(sets)
    y, p = chall.predictions["phrasebank"]["sentiment"]
    chall.predictions["phrasebank"]["sentiment"] = (y[::-1], p[::-1])  # type: ignore[index]
    failed = {c.name: c.detail for c in evaluate_gate(champ, chall, CONFIG).failures}
    assert "not scored on the same rows" in failed["paired_macro_f1[phrasebank/sentiment]"]


def test_report_separates_base_sets_and_feedback_and_is_json_safe():
    champ, chall = _candidates(_sets(churn=0.02, feedback_n=150))
    result = evaluate_gate(champ, chall, CONFIG)
    md = build_report(champ, chall, result, CONFIG)["markdown"]
    base, feedback, model = (md.index(h) for h in ("## Base sets", "## Feedback hold-out", "## Model checks"))
    assert base < feedback < model
    assert "feedback_recent" in md[feedback:model] and "feedback_recent" not in md[base:feedback]
    assert "pooled_macro_f1[base]" in md[base:feedback]


def test_error_rates_by_simulation_at_the_shipped_sizes():
    """Equal quality rejected <= 5 %; 2 points worse on every set rejected >= 95 % (3 % churn, seeded)."""
    config = GateConfig(bootstrap_samples=500)
    equal = simulate_gate(SHIPPED_SETS, config, churn=0.03, drop=0.0, replications=200, seed=1)
    worse = simulate_gate(SHIPPED_SETS, config, churn=0.03, drop=0.02, replications=200, seed=2)
    assert equal.reject_rate <= 0.05, equal
    assert worse.reject_rate >= 0.95, worse


@pytest.mark.parametrize("name, task", [("phrasebank", "sentiment"), ("tweet_topic", "topic")])
def test_the_simulation_judges_a_set_as_the_gate_does(name, task):
    """The error rates above are the shipped rules' only if the simulation's per-set verdict is the gate's: same
    pair, same bootstrap draws, same verdict, over pairs from clearly equal to clearly worse."""
    counts, acc = SHIPPED_SETS[name]
    labels = label_maps()[task]
    config = GateConfig(bootstrap_samples=300)
    verdicts = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        churn = (0.02, 0.06, 0.12)[seed % 3]
        y, a, b = simulate_pair(counts, acc, churn, 0.01 * (seed % 7), rng)
        if seed % 5 == 0:  # a collapsed negative class: the negative-recall / class guardrail decides
            b = np.where((y == 0) & (b == 0) & (rng.random(len(y)) < 0.15), 1, b)
        champion_negative_precision = float(np.mean(y[a == 0] == 0)) if (a == 0).any() else 0.0
        metrics = {name: {task: {"n": len(y), "per_class": {labels[0]: {
            "support": int((y == 0).sum()), "precision": champion_negative_precision}}}}}
        champion = Candidate("v1", label_maps(), metrics, 5.0, predictions={name: {task: (y.tolist(), a.tolist())}})
        challenger = Candidate("v2", label_maps(), metrics, 5.0, predictions={name: {task: (y.tolist(), b.tolist())}})
        gate = evaluate_gate(champion, challenger, config)
        gate_rejects_set = any(c.votes and not c.passed for c in gate.checks if c.name.endswith(f"[{name}/{task}]"))
        cmp = paired_bootstrap(y, a, b, len(counts), samples=config.bootstrap_samples,
                               confidence=config.confidence, rng=np.random.default_rng(config.seed))
        assert set_rejected(cmp, counts, config) == gate_rejects_set, (seed, [c for c in gate.checks if not c.passed])
        verdicts.append(gate_rejects_set)
    assert 5 <= sum(verdicts) <= 35, sum(verdicts)  # both verdicts were exercised


def _guard_pair(n: int, champion_wrong: slice, challenger_wrong: slice, seed: int = 3):
    """A sentiment slice of ``n`` rows; each model gets the rows of its slice of one random order wrong, so
    overlapping slices share errors and the rest are errors one model fixes and the other makes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    order = rng.permutation(n)
    a, b = y.copy(), y.copy()
    a[order[champion_wrong]] = (y[order[champion_wrong]] + 1) % 3
    b[order[challenger_wrong]] = (y[order[challenger_wrong]] + 1) % 3
    return y, a, b


def test_a_guard_slice_fails_a_challenger_that_passes_every_pooled_vote_but_loses_the_slice():
    sets = _sets(churn=0.0)  # the base sets: the challenger equals the champion there
    sets["guard:financial_phrasebank/valid agreement=100"] = {"sentiment": _guard_pair(226, slice(0, 5), slice(2, 14))}
    result = evaluate_gate(*_candidates(sets), CONFIG)
    guard = next(c for c in result.checks if c.name.startswith("guard_macro_f1["))
    assert guard.votes and not guard.passed and "upper bound must be >= -0.0" in guard.detail
    assert [c.name for c in result.failures] == [guard.name]
    assert result.comparisons["pooled_base"]["sets"] == ["phrasebank/sentiment", "tweet_sentiment/sentiment",
                                                         "tweet_topic/topic"]  # the slice is not pooled
    report = build_report(*_candidates(sets), result, CONFIG)
    assert "## Guard slices" in report["markdown"] and guard.name in report["markdown"].split("## Guard slices")[1]
    # 5 -> 12 errors (2 fixed, 9 new: the seed-15 student's count) failed above; 5 -> 7 (3 fixed, 5 new) is within
    # noise, and a slice below min_guard_examples does not vote.
    sets["guard:financial_phrasebank/valid agreement=100"] = {"sentiment": _guard_pair(226, slice(0, 5), slice(3, 10))}
    assert evaluate_gate(*_candidates(sets), CONFIG).passed
    y, a, _ = _guard_pair(226, slice(0, 5), slice(0, 0))
    sets["guard:financial_phrasebank/valid agreement=100"] = {"sentiment": (y, a, a)}  # identical: upper bound 0
    assert evaluate_gate(*_candidates(sets), CONFIG).passed
    sets["guard:financial_phrasebank/valid agreement=100"] = {"sentiment": _guard_pair(60, slice(0, 0), slice(0, 30))}
    small = evaluate_gate(*_candidates(sets), CONFIG)
    guard = next(c for c in small.checks if c.name.startswith("guard_macro_f1["))
    assert small.passed and not guard.votes and "informational only: 60 rows < 100" in guard.detail


def test_guard_slice_error_rates_by_simulation_at_the_all_agree_size():
    """PhraseBank all-agree (226 rows, accuracy 0.978), 3 % churn: an equal challenger is rarely rejected; one that
    loses 4 macro-F1 points there is caught about half the time (bench_gate.py --guard-only prints the table)."""
    counts, accuracy = GUARD_SETS["phrasebank_allagree"]
    config = GateConfig(bootstrap_samples=1000)
    equal = simulate_guard(counts, accuracy, config, churn=0.03, drop=0.0, replications=300, seed=21)
    worse = simulate_guard(counts, accuracy, config, churn=0.03, drop=0.04, replications=300, seed=22)
    assert equal <= 0.06 and worse >= 0.4, (equal, worse)


def _width(cmp) -> float:
    return cmp.upper - cmp.lower


def test_paired_bootstrap_resamples_near_duplicate_clusters_when_given():
    """Every row twice (each pair one cluster, as a tweet and its repost): no new evidence, so the cluster
    bootstrap keeps the interval's width while the row bootstrap's shrinks by ~1/sqrt(2) (0.040 -> 0.027 when
    the audit measured it): the cluster splits put whole clusters into dev, rows resampled alone understated the
    noise (tweet_topic: 1,701 dev rows in 1,543 clusters)."""
    rng = np.random.default_rng(5)
    y, a, b = simulate_pair(*SHIPPED_SETS["phrasebank"], 0.08, 0.0, rng)
    once = paired_bootstrap(y, a, b, 3, samples=2000)
    yy, aa, bb = (np.repeat(v, 2) for v in (y, a, b))
    rows = paired_bootstrap(yy, aa, bb, 3, samples=2000)
    pairs = np.repeat(np.arange(len(y)), 2)
    clustered = paired_bootstrap(yy, aa, bb, 3, samples=2000, clusters=pairs.tolist())
    assert _width(rows) < 0.8 * _width(once), (_width(rows), _width(once))
    assert _width(clustered) == pytest.approx(_width(once), rel=0.12), (_width(clustered), _width(once))
    assert clustered.diff == rows.diff == pytest.approx(once.diff) and clustered.n == 2 * len(y)
    assert (clustered.clusters, rows.clusters) == (len(y), None)
    # singleton clusters are the row bootstrap (same distribution); the row path is unchanged (seeded)
    singletons = paired_bootstrap(y, a, b, 3, samples=2000, clusters=[f"t{i}" for i in range(len(y))])
    assert _width(singletons) == pytest.approx(_width(once), rel=0.12)
    with pytest.raises(ValueError, match="cluster ids must name every row"):
        paired_bootstrap(y, a, b, 3, clusters=[0])


def test_the_gate_resamples_the_clusters_its_candidates_carry():
    """``Candidate.clusters`` (filled by ``retrain.candidate``) reach the gate's bootstrap: on duplicated sets the
    gate's intervals are those of the sets once; without cluster ids they are too narrow."""
    sets = _sets(churn=0.04)
    once = evaluate_gate(*_candidates(sets), CONFIG).comparisons
    doubled = {name: {task: tuple(np.repeat(v, 2) for v in arrays) for task, arrays in tasks.items()}
               for name, tasks in sets.items()}
    champ, chall = _candidates(doubled)
    rows = evaluate_gate(champ, chall, CONFIG).comparisons
    ids = {name: {task: [f"{name} text {i // 2}" for i in range(len(y))] for task, (y, _, _) in tasks.items()}
           for name, tasks in doubled.items()}
    champ = Candidate(**{**champ.__dict__, "clusters": ids})
    result = evaluate_gate(champ, chall, CONFIG)  # the challenger has none: the champion's ids are used
    for name in ("phrasebank/sentiment", "tweet_topic/topic"):
        width = once[name]["upper"] - once[name]["lower"]
        assert rows[name]["upper"] - rows[name]["lower"] < 0.8 * width
        got = result.comparisons[name]
        assert got["upper"] - got["lower"] == pytest.approx(width, rel=0.15), (name, got, once[name])
        assert got["clusters"] == got["n"] // 2
    assert "near-duplicate clusters" in next(c.detail for c in result.checks
                                             if c.name == "paired_macro_f1[phrasebank/sentiment]")
    # two candidates whose rows carry other cluster ids were not scored on the same rows
    other = {name: {task: list(range(len(v))) for task, v in tasks.items()} for name, tasks in ids.items()}
    failed = {c.name: c.detail for c in evaluate_gate(champ, Candidate(**{**chall.__dict__, "clusters": other}),
                                                      CONFIG).failures}
    assert "cluster ids differ" in failed["paired_macro_f1[phrasebank/sentiment]"]


def test_retrain_candidates_carry_each_rows_near_duplicate_key(monkeypatch, tmp_path):
    """``retrain.candidate`` (used by ``marketmood retrain``, ``models register --promote`` and ``bench_gate.py
    --pair``) gives every scored row its text's near-duplicate key, in the order of its predictions."""
    from types import SimpleNamespace

    from training import retrain
    from training.datasets import LabeledExample, near_duplicate_key

    class Fake:
        def classify(self, texts):
            return [SimpleNamespace(sentiment="neutral", topic=label_maps()["topic"][0]) for _ in texts]

    monkeypatch.setattr(retrain, "load_cpu_classifier", lambda _: Fake())
    monkeypatch.setattr(retrain, "read_info", lambda _: SimpleNamespace(labels=label_maps()))
    texts = ["$AAPL up! https://t.co/x", "Oil slumps", "$aapl up https://t.co/y"]
    sets = {"tweets": [LabeledExample(text=t, sentiment=i % 3, topic=1 if i else None, source="x")
                       for i, t in enumerate(texts)]}
    cand = retrain.candidate("v1", tmp_path, sets, texts, smoke=False)
    assert cand.clusters["tweets"]["sentiment"] == [near_duplicate_key(t) for t in texts]
    assert cand.clusters["tweets"]["topic"] == [near_duplicate_key(t) for t in texts[1:]]
    assert len(cand.clusters["tweets"]["topic"]) == len(cand.predictions["tweets"]["topic"][0])
    assert cand.clusters["tweets"]["sentiment"][0] == cand.clusters["tweets"]["sentiment"][2]


def test_base_sets_and_guard_slice_together_reject_more_often_than_either():
    """The documented combined false-reject rate (``python -m training.gate_sim``): the guard slice's vote adds to
    the base sets', and a voting feedback hold-out (superiority) rejects nearly every equal challenger."""
    from training.gate_sim import FEEDBACK_SET, simulate_feedback_vote, simulate_retrain_gate

    config = GateConfig(bootstrap_samples=300)
    both = simulate_retrain_gate(SHIPPED_SETS, GUARD_SETS, config, churn=0.04, replications=60, seed=3)
    guard = both.guard_reject["phrasebank_allagree"]
    # seeded: each vote alone rejects some equal challengers, and they are not the same ones (60 replications:
    # base 2, guard 2, either 4); a simulator that dropped either vote, or counted only rows both reject, fails
    assert 0 < both.base_reject < both.reject_rate and 0 < guard < both.reject_rate
    assert both.reject_rate <= both.base_reject + guard
    assert simulate_feedback_vote(*FEEDBACK_SET, config, churn=0.04, replications=60, seed=3) >= 0.9
