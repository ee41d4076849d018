"""Promotion gate: a paired statistical test of challenger vs champion on the same rows, plus guardrails.

Why paired: both models score the same rows, so most of the sampling noise of macro-F1 is shared and
cancels in the difference. The gate bootstraps that difference (rows resampled with replacement, both
models' predictions kept together; whole near-duplicate clusters when the candidates carry cluster ids, as a
retrain's do: the cluster splits put whole clusters into dev) and votes with the bounds of its two-sided interval:

* every base set that is large enough: lower bound > ``-set_delta`` (no set may regress clearly);
* the base sets pooled (mean of the per-set differences): lower bound > ``-delta`` (non-inferiority);
* every feedback set that is large enough and holds enough confirmations (rows the champion already got
  right, not only its corrected mistakes): lower bound > 0 (the challenger must do better where analysts
  looked);
* every guard slice (a named subset of labeled rows, e.g. PhraseBank's all-annotators-agree sentences) that is
  large enough: upper bound >= ``-guard_delta`` (0 by default: no loss there that the interval can see). Why: the
  pooled vote averages whole sets, and a challenger can pass it while losing the easy, unambiguous rows (a
  topic-distilled student did, -0.043 [-0.083, -0.012] macro-F1 on 226 all-agree rows; BENCHMARKS.md);
* per-class guardrails on the base sets: no class with ``min_class_support`` gold rows loses more than
  ``class_delta`` F1, and negative recall (what alerts page on) loses at most the same;
* label maps equal, CPU latency within budget, the exported artifact passes the smoke test.

Sets below ``min_examples`` (base), ``min_feedback_examples`` (feedback) or ``min_guard_examples`` (guard) are
reported and do not vote:
at 176 rows (fiqa) the interval of a macro-F1 difference is wider than any effect worth gating on.
Why a pooled vote: at the shipped dev sizes (485 / 954 / 1,699 rows) one set alone cannot tell "equal"
from "2 points worse" with 5 % errors both ways; the pooled difference can when the two models disagree on
a few percent of rows (``training.gate_sim`` and ``benchmarks/bench_gate.py`` measure it).

Those 5 % are the base-set votes' alone. Every vote is a separate 95 % interval, so a retrain's false-reject
rate adds up: with the default guard slice (226 rows inside the PhraseBank dev set) an equal challenger is
rejected ~2 / 5 / 8 % of the time at 2 / 3 / 4 % churn (base sets 0 / 1 / 4 %, guard 2-4 %; simulated by
``python -m training.gate_sim``). A feedback hold-out that votes (enough rows and confirmations) asks for a
lower bound above 0, i.e. superiority: an equal challenger fails it ~97.5 % of the time (98 % simulated), so
with such a hold-out the gate promotes only a challenger that is better where analysts looked.

The statistics are pure numpy functions on label-index arrays, so they are tested by simulation.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

NEGATIVE = "negative"
FEEDBACK_PREFIX = "feedback"
GUARD_PREFIX = "guard:"
# The guard slices a retrain is judged on unless configured otherwise (``retrain.gate_guard_slices``; files under
# the data path): the PhraseBank sentences all annotators agreed on, the 0.97 bar.
DEFAULT_GUARD_SLICES: tuple[str, ...] = ("financial_phrasebank/valid.csv agreement=100",)


@dataclass(frozen=True)
class GateConfig:
    delta: float = 0.02  # pooled non-inferiority margin (macro-F1 points / 100)
    set_delta: float = 0.05  # per-set margin: a clear regression on any single base set fails
    confidence: float = 0.95  # two-sided interval level; the gate uses its lower bound
    bootstrap_samples: int = 2000
    min_examples: int = 300  # a base set needs this many rows to vote
    min_feedback_examples: int = 100  # a feedback set needs this many rows to vote
    # ... and this share of confirmations (rows the champion already got right): a hold-out made only of
    # corrections of the champion's own mistakes is biased against it and does not vote.
    min_feedback_confirmations: float = 0.3
    guard_delta: float = 0.0  # a guard slice fails when its interval's upper bound is below -guard_delta
    min_guard_examples: int = 100  # a guard slice needs this many rows to vote
    class_delta: float = 0.10  # per-class F1 / negative-recall guardrail (point estimate)
    min_class_support: int = 50  # classes with fewer gold rows are not guarded (too noisy)
    latency_budget_ms: float = 50.0
    seed: int = 0  # the bootstrap is seeded: the same models on the same rows give the same verdict


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    champion: float | None = None
    challenger: float | None = None
    votes: bool = True


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)
    comparisons: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


# (gold label indices, predicted label indices) per set and task
Predictions = Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[int]]]]


@dataclass(frozen=True)
class Candidate:
    """Everything the gate knows about one model: summary metrics and its per-row predictions."""

    version: str
    labels: dict[str, list[str]]
    metrics: dict[str, dict[str, dict[str, Any]]]
    latency_ms_per_text: float | None = None
    smoke_ok: bool = True
    smoke_detail: str = ""
    predictions: Predictions = field(default_factory=dict)
    # {set: {task: one cluster id per row of ``predictions[set][task]``}}: rows sharing an id (near-duplicate
    # texts, ``training.datasets.near_duplicate_key``) are resampled together by the paired bootstrap; a set
    # without ids is resampled by rows. ``training.retrain.candidate`` fills it from the rows' texts.
    clusters: Mapping[str, Mapping[str, Sequence[Hashable]]] = field(default_factory=dict)


# ---------------------------------------------------------------- statistics (pure numpy)


@dataclass(frozen=True)
class PairedComparison:
    """Challenger minus champion on one set: point difference, bootstrap interval, per-class F1 deltas."""

    n: int
    diff: float
    lower: float
    upper: float
    se: float
    disagreement: float  # share of rows where the two models predict differently
    champion_f1: float
    challenger_f1: float
    class_f1_delta: dict[int, float]  # class index -> challenger F1 - champion F1 (point estimate)
    class_support: dict[int, int]
    negative_recall: tuple[float, float] | None = None  # (champion, challenger) when class 0 is "negative"
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)  # bootstrap differences
    clusters: int | None = None  # clusters resampled (near-duplicate groups); None: rows were resampled


def cluster_index(clusters: Sequence[Hashable], n: int) -> np.ndarray:
    """Cluster ids (any hashables, e.g. ``training.datasets.near_duplicate_key`` of each row's text) as 0..G-1."""
    if len(clusters) != n:
        raise ValueError(f"cluster ids must name every row (got {len(clusters)} ids for {n} rows)")
    ids: dict[Hashable, int] = {}
    return np.fromiter((ids.setdefault(c, len(ids)) for c in clusters), dtype=np.int64, count=n)


def resampled_cells(codes: np.ndarray, clusters: Sequence[Hashable] | None, samples: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Bootstrap resamples of per-row codes as counts of their distinct values.

    Returns (distinct codes, their counts in the full sample, ``samples`` x cells resampled counts, number of
    resampling units). Without ``clusters`` rows are resampled with replacement: multinomial counts over the
    distinct codes, the same distribution at O(cells) per replicate. With ``clusters`` (one id per row) whole
    clusters are resampled, as many as there are: rows of one near-duplicate cluster are not independent
    evidence (the cluster splits keep each cluster on one side, so a dev set holds whole clusters), and
    resampling them as rows makes the interval too narrow. Clusters with the same cell counts (most are
    singletons) are drawn as one type, so this costs O(types) per replicate.
    """
    uniq, inverse = np.unique(codes, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(uniq))
    if clusters is None:
        n = int(counts.sum())
        return uniq, counts, rng.multinomial(n, counts / n, size=samples), n
    ids = cluster_index(clusters, len(codes))
    g = int(ids.max()) + 1
    per_cluster = np.zeros((g, len(uniq)), dtype=np.int64)
    np.add.at(per_cluster, (ids, inverse), 1)
    types, type_counts = np.unique(per_cluster, axis=0, return_counts=True)
    draws = rng.multinomial(g, type_counts / g, size=samples)
    return uniq, counts, draws @ types, g


def macro_f1_counts(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(macro-F1 over the ``mask`` classes, per-class F1) from counts; works on any leading dims."""
    denom = n_true + n_pred
    f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1e-12), 0.0)
    return (f1 * mask).sum(axis=-1) / max(int(mask.sum()), 1), f1


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Macro-F1 over the classes present in the gold labels (as ``training.evaluation.task_metrics``)."""
    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    eye = np.eye(n_classes)
    tp = eye[y][y == p].sum(axis=0)
    value, _ = macro_f1_counts(tp, np.bincount(y, minlength=n_classes), np.bincount(p, minlength=n_classes),
                               np.bincount(y, minlength=n_classes) > 0)
    return float(value)


def paired_bootstrap(
    y_true: Sequence[int], champion: Sequence[int], challenger: Sequence[int], n_classes: int, *,
    samples: int = 2000, confidence: float = 0.95, rng: np.random.Generator | None = None,
    clusters: Sequence[Hashable] | None = None,
) -> PairedComparison:
    """Paired bootstrap of the macro-F1 difference (challenger - champion) on the same rows.

    Rows are resampled jointly, so the interval reflects only what differs between the two models. The
    resample is drawn as multinomial counts over the distinct (gold, champion, challenger) cells, which is
    the same distribution as resampling rows and costs O(cells) instead of O(rows) per replicate.
    ``clusters`` (one id per row, e.g. its text's ``near_duplicate_key``) resamples whole clusters instead
    (``resampled_cells``); None keeps the row bootstrap. Macro-F1 is taken over the classes of the full
    sample's gold labels in every resample (as the point estimate).
    """
    rng = rng or np.random.default_rng(0)
    y = np.asarray(y_true, dtype=np.int64)
    a = np.asarray(champion, dtype=np.int64)
    b = np.asarray(challenger, dtype=np.int64)
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise ValueError(f"paired test needs equal, non-empty arrays (got {len(y)}, {len(a)}, {len(b)})")
    k = n_classes
    uniq, counts, draws, units = resampled_cells((y * k + a) * k + b, clusters, samples, rng)
    t, pa, pb = uniq // (k * k), (uniq // k) % k, uniq % k
    n = int(counts.sum())
    eye = np.eye(k)
    gold, ca, cb = eye[t], eye[pa], eye[pb]
    hit_a, hit_b = gold * (t == pa)[:, None], gold * (t == pb)[:, None]
    mask = np.bincount(y, minlength=k) > 0

    def stats(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        fa, cls_a = macro_f1_counts(w @ hit_a, w @ gold, w @ ca, mask)
        fb, cls_b = macro_f1_counts(w @ hit_b, w @ gold, w @ cb, mask)
        return fa, fb, cls_a, cls_b

    fa, fb, cls_a, cls_b = stats(counts.astype(float))
    boot_a, boot_b, _, _ = stats(draws.astype(float))
    diffs = boot_b - boot_a
    alpha = 1.0 - confidence
    lower, upper = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    support = np.bincount(y, minlength=k)
    neg = None
    if support[0] > 0:
        neg = (float(((y == 0) & (a == 0)).sum() / support[0]), float(((y == 0) & (b == 0)).sum() / support[0]))
    return PairedComparison(
        n=n, diff=float(fb - fa), lower=float(lower), upper=float(upper), se=float(diffs.std(ddof=1)),
        disagreement=float((a != b).mean()), champion_f1=float(fa), challenger_f1=float(fb),
        class_f1_delta={int(i): float(cls_b[i] - cls_a[i]) for i in np.flatnonzero(mask)},
        class_support={int(i): int(support[i]) for i in np.flatnonzero(mask)},
        negative_recall=neg, samples=diffs, clusters=None if clusters is None else units,
    )


def pooled_interval(samples: Sequence[np.ndarray], confidence: float) -> tuple[float, float, float]:
    """(mean, lower, upper) of the mean difference over independent sets, from their bootstrap draws."""
    stacked = np.vstack([np.asarray(s) for s in samples])
    mean = stacked.mean(axis=0)
    alpha = 1.0 - confidence
    lower, upper = np.quantile(mean, [alpha / 2, 1 - alpha / 2])
    return float(mean.mean()), float(lower), float(upper)


def is_feedback_set(name: str) -> bool:
    return name.startswith(FEEDBACK_PREFIX)


def is_guard_set(name: str) -> bool:
    """A subset of labeled rows that only votes against a clear loss (``guard:<file> <filter>``)."""
    return name.startswith(GUARD_PREFIX)


# ---------------------------------------------------------------- the decision


def _negative_is_informative(task_metrics: Mapping[str, Any]) -> bool:
    """A champion that calls everything negative has recall 1.0; holding a real challenger to it would
    block every promotion, so negative recall is guarded only when the champion's negative calls carry
    information (precision above the class's base rate)."""
    cls = (task_metrics.get("per_class") or {}).get(NEGATIVE) or {}
    n = int(task_metrics.get("n") or 0)
    base_rate = float(cls.get("support", 0)) / n if n else 0.0
    return float(cls.get("precision", 0.0)) > base_rate


# One predicate per statistical rule, shared by ``evaluate_gate`` and the error-rate simulation
# (``training.gate_sim``), so the measured false-reject rates are those of the rules that decide.


def base_set_passes(cmp: PairedComparison, config: GateConfig) -> bool:
    """A base set's vote: no clear regression (the interval's lower bound above ``-set_delta``)."""
    return cmp.lower > -config.set_delta


def guarded_class_deltas(cmp: PairedComparison, config: GateConfig) -> dict[int, float]:
    """Per-class F1 deltas of the classes with enough gold rows to be guarded (``min_class_support``)."""
    return {i: d for i, d in cmp.class_f1_delta.items() if cmp.class_support[i] >= config.min_class_support}


def class_delta_passes(delta: float, config: GateConfig) -> bool:
    """A guarded class may lose at most ``class_delta`` F1 (point estimate)."""
    return delta >= -config.class_delta


def negative_recall_passes(old: float, new: float, config: GateConfig) -> bool:
    """Negative recall (what alerts page on) may lose at most ``class_delta`` (point estimate)."""
    return new >= old - config.class_delta


def pooled_passes(lower: float, config: GateConfig) -> bool:
    """The pooled vote over base sets: non-inferior within ``delta`` (lower bound above ``-delta``)."""
    return lower > -config.delta


def guard_passes(cmp: PairedComparison, config: GateConfig) -> bool:
    """A guard slice's vote: no loss the interval can see (its upper bound not below ``-guard_delta``)."""
    return cmp.upper >= -config.guard_delta


def _fmt_cmp(c: PairedComparison) -> str:
    units = "" if c.clusters is None else f" in {c.clusters} near-duplicate clusters"
    return (f"diff {c.diff:+.4f} [{c.lower:+.4f}, {c.upper:+.4f}], n={c.n}{units}, "
            f"disagree {100 * c.disagreement:.1f}%")


def _guardrail(name: str, c: PairedComparison, labels: Sequence[str], champion_metrics: Mapping[str, Any],
               config: GateConfig, task: str) -> list[Check]:
    guarded = guarded_class_deltas(c, config)
    checks = []
    if guarded:
        worst = min(guarded, key=guarded.get)  # type: ignore[arg-type]
        ok = class_delta_passes(guarded[worst], config)
        checks.append(Check(f"class_f1[{name}]", ok, f"worst class {labels[worst]!r}: F1 {guarded[worst]:+.4f} "
                            f"(limit -{config.class_delta}, {len(guarded)} classes with >= "
                            f"{config.min_class_support} rows)", None, guarded[worst]))
    if task == "sentiment" and c.negative_recall is not None and labels and labels[0] == NEGATIVE:
        old, new = c.negative_recall
        if c.class_support.get(0, 0) < config.min_class_support or not _negative_is_informative(champion_metrics):
            checks.append(Check(f"negative_recall[{name}]", True, "informational only (too few negatives or the "
                                "champion's negative calls are uninformative)", old, new, votes=False))
        else:
            checks.append(Check(f"negative_recall[{name}]", negative_recall_passes(old, new, config),
                                f"{new:.4f} vs {old:.4f} (limit -{config.class_delta})", old, new))
    return checks


def evaluate_gate(champion: Candidate, challenger: Candidate, config: GateConfig) -> GateResult:
    """Apply every rule; the challenger passes only if all voting checks pass."""
    rng = np.random.default_rng(config.seed)
    checks: list[Check] = []
    comparisons: dict[str, Any] = {}
    same_labels = champion.labels == challenger.labels
    checks.append(Check("label_maps", same_labels, "identical" if same_labels else
                        f"champion {champion.labels} != challenger {challenger.labels}"))

    keys_a = {(s, t) for s, tasks in champion.predictions.items() for t in tasks}
    keys_b = {(s, t) for s, tasks in challenger.predictions.items() for t in tasks}
    pooled: list[np.ndarray] = []
    pooled_names: list[str] = []
    for key in sorted(keys_a | keys_b):
        set_name, task = key
        name = f"{set_name}/{task}"
        feedback, guard = is_feedback_set(set_name), is_guard_set(set_name)
        kind = "feedback_macro_f1" if feedback else "guard_macro_f1" if guard else "paired_macro_f1"
        if key not in keys_a or key not in keys_b:
            checks.append(Check(f"{kind}[{name}]", False, "evaluated for only one of the two models"))
            continue
        y_a, p_a = champion.predictions[set_name][task]
        y_b, p_b = challenger.predictions[set_name][task]
        if list(y_a) != list(y_b):
            checks.append(Check(f"{kind}[{name}]", False, "the two models were not scored on the same rows"))
            continue
        ids_a = (champion.clusters.get(set_name) or {}).get(task)
        ids_b = (challenger.clusters.get(set_name) or {}).get(task)
        if ids_a is not None and ids_b is not None and list(ids_a) != list(ids_b):
            checks.append(Check(f"{kind}[{name}]", False, "the two models were not scored on the same rows "
                                "(their rows' cluster ids differ)"))
            continue
        ids = ids_a if ids_a is not None else ids_b
        if ids is not None and len(ids) != len(y_a):
            checks.append(Check(f"{kind}[{name}]", False, f"{len(ids)} cluster ids for {len(y_a)} rows"))
            continue
        labels = champion.labels.get(task) or challenger.labels.get(task) or []
        cmp = paired_bootstrap(y_a, p_a, p_b, max(len(labels), int(max([*y_a, *p_a, *p_b], default=0)) + 1),
                               samples=config.bootstrap_samples, confidence=config.confidence, rng=rng,
                               clusters=ids)
        comparisons[name] = {k: v for k, v in asdict(cmp).items() if k != "samples"} | {"feedback": feedback,
                                                                                          "guard": guard}
        minimum = (config.min_feedback_examples if feedback else config.min_guard_examples if guard
                   else config.min_examples)
        if cmp.n < minimum:
            checks.append(Check(f"{kind}[{name}]", True, f"informational only: {cmp.n} rows < {minimum}; "
                                f"{_fmt_cmp(cmp)}", cmp.champion_f1, cmp.challenger_f1, votes=False))
            continue
        if feedback:
            confirmations = float(np.mean(np.asarray(y_a) == np.asarray(p_a)))
            comparisons[name]["confirmations"] = confirmations
            if confirmations < config.min_feedback_confirmations:
                checks.append(Check(f"{kind}[{name}]", True, f"informational only: {100 * confirmations:.0f}% "
                                    f"confirmations < {100 * config.min_feedback_confirmations:.0f}% (a hold-out of "
                                    f"the champion's own mistakes is biased against it); {_fmt_cmp(cmp)}",
                                    cmp.champion_f1, cmp.challenger_f1, votes=False))
                continue
            checks.append(Check(f"{kind}[{name}]", cmp.lower > 0.0, f"lower bound must be > 0 "
                                f"({100 * confirmations:.0f}% confirmations): {_fmt_cmp(cmp)}",
                                cmp.champion_f1, cmp.challenger_f1))
            continue
        if guard:
            checks.append(Check(f"{kind}[{name}]", guard_passes(cmp, config),
                                f"upper bound must be >= -{config.guard_delta} (no clear loss on this slice): "
                                f"{_fmt_cmp(cmp)}", cmp.champion_f1, cmp.challenger_f1))
            continue
        checks.append(Check(f"{kind}[{name}]", base_set_passes(cmp, config),
                            f"lower bound must be > -{config.set_delta}: {_fmt_cmp(cmp)}",
                            cmp.champion_f1, cmp.challenger_f1))
        checks += _guardrail(name, cmp, labels, (champion.metrics.get(set_name) or {}).get(task) or {}, config, task)
        pooled.append(cmp.samples)  # type: ignore[arg-type]
        pooled_names.append(name)

    if pooled:
        mean, lower, upper = pooled_interval(pooled, config.confidence)
        comparisons["pooled_base"] = {"sets": pooled_names, "diff": mean, "lower": lower, "upper": upper}
        checks.append(Check("pooled_macro_f1[base]", pooled_passes(lower, config),
                            f"mean diff over {len(pooled)} base sets {mean:+.4f} [{lower:+.4f}, {upper:+.4f}]; "
                            f"lower bound must be > -{config.delta}", None, mean))
    else:
        checks.append(Check("pooled_macro_f1[base]", False,
                            f"no base set has the {config.min_examples} rows needed to vote"))

    lat = challenger.latency_ms_per_text
    if lat is None:
        checks.append(Check("latency", False, "challenger latency was not measured"))
    else:
        checks.append(Check("latency", lat <= config.latency_budget_ms,
                            f"{lat:.2f} ms/text (budget {config.latency_budget_ms} ms)",
                            champion.latency_ms_per_text, lat))
    checks.append(Check("smoke_test", challenger.smoke_ok,
                        challenger.smoke_detail or ("ok" if challenger.smoke_ok else "failed")))
    return GateResult(passed=all(c.passed for c in checks), checks=checks, comparisons=comparisons)


# ---------------------------------------------------------------- the report


def _task_metrics(metrics: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s, t): m for s, tasks in metrics.items() for t, m in tasks.items() if isinstance(m, dict)}


def per_class_comparison(champion: Candidate, challenger: Candidate) -> dict[str, Any]:
    """{set: {task: {label: {champion: {...}, challenger: {...}, delta_f1}}}} for the report."""
    out: dict[str, Any] = {}
    champ, chall = _task_metrics(champion.metrics), _task_metrics(challenger.metrics)
    for key in sorted(champ.keys() & chall.keys()):
        set_name, task = key
        a, b = champ[key].get("per_class") or {}, chall[key].get("per_class") or {}
        rows = {}
        for label in [*a, *[lbl for lbl in b if lbl not in a]]:
            ca, cb = a.get(label), b.get(label)
            delta = None if ca is None or cb is None else round(float(cb["f1"]) - float(ca["f1"]), 4)
            rows[label] = {"champion": ca, "challenger": cb, "delta_f1": delta}
        out.setdefault(set_name, {})[task] = rows
    return out


def build_report(
    champion: Candidate, challenger: Candidate, result: GateResult, config: GateConfig, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """JSON report stored in ``model_versions.report`` (its ``markdown`` key is the human rendering)."""
    report: dict[str, Any] = {
        "champion": champion.version,
        "challenger": challenger.version,
        "passed": result.passed,
        "gate_config": asdict(config),
        "checks": [asdict(c) for c in result.checks],
        "comparisons": result.comparisons,
        "metrics": {"champion": champion.metrics, "challenger": challenger.metrics},
        "latency_ms_per_text": {"champion": champion.latency_ms_per_text, "challenger": challenger.latency_ms_per_text},
        "per_class": per_class_comparison(champion, challenger),
        **(extra or {}),
    }
    report["markdown"] = render_markdown(report)
    json.dumps(report)  # fail here, not in the database, if something is not JSON-safe
    return report


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _check_rows(checks: list[dict[str, Any]]) -> list[str]:
    lines = ["| check | result | champion | challenger | detail |", "|---|---|---|---|---|"]
    for c in checks:
        verdict = ("pass" if c["passed"] else "FAIL") if c.get("votes", True) else "info"
        lines.append(f"| {c['name']} | {verdict} | {_fmt(c['champion'])} | {_fmt(c['challenger'])} | {c['detail']} |")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """Base sets and feedback in separate sections: they answer different questions."""
    verdict = "PASSED" if report["passed"] else "REJECTED"
    checks = report["checks"]

    def section_of(name: str) -> str:
        inner = name.partition("[")[2].rstrip("]")
        if not inner or inner == "base":
            return "model" if not inner else "base"
        if is_guard_set(inner):
            return "guard"
        return "feedback" if is_feedback_set(inner.split("/")[0]) else "base"

    lines = [f"# Promotion gate: {report['challenger']} vs {report['champion']}: {verdict}", ""]
    for title, section in (("Base sets (frozen dev splits)", "base"), ("Guard slices", "guard"),
                           ("Feedback hold-out", "feedback"), ("Model checks", "model")):
        rows = [c for c in checks if section_of(c["name"]) == section]
        lines += [f"## {title}", ""] + (_check_rows(rows) if rows else ["(none)"]) + [""]
    for set_name, tasks in report["per_class"].items():
        for task, rows in tasks.items():
            lines += [f"## {set_name} / {task}: per class", "",
                      "| class | champion P / R / F1 | challenger P / R / F1 | delta F1 |", "|---|---|---|---|"]
            for label, row in rows.items():
                def prf(m: dict[str, Any] | None) -> str:
                    return "-" if m is None else f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"
                lines.append(f"| {label} | {prf(row['champion'])} | {prf(row['challenger'])} | {_fmt(row['delta_f1'])} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
