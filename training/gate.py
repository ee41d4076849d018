"""Promotion gate: decides from metric dicts alone whether a challenger may replace the champion.

Pure logic (no I/O) so every rule is unit-tested on hand-written numbers. Metrics come per evaluation set
and task, in the shape ``training.evaluation.evaluate`` returns::

    {"phrasebank": {"sentiment": {"accuracy": .8, "macro_f1": .79, "n": 485,
                                   "per_class": {"negative": {"precision": .., "recall": .., "f1": .., "support": ..}}}}}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

NEGATIVE = "negative"


@dataclass(frozen=True)
class GateConfig:
    macro_f1_tolerance: float = 0.005
    latency_budget_ms: float = 50.0
    # Sets smaller than this are reported but do not vote: a handful of rows is noise, not evidence.
    min_examples: int = 20


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    champion: float | None = None
    challenger: float | None = None


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class Candidate:
    """Everything the gate knows about one model."""

    version: str
    labels: dict[str, list[str]]
    metrics: dict[str, dict[str, dict[str, Any]]]
    latency_ms_per_text: float | None = None
    smoke_ok: bool = True
    smoke_detail: str = ""


def _task_metrics(metrics: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s, t): m for s, tasks in metrics.items() for t, m in tasks.items() if isinstance(m, dict)}


def _recall(task_metrics: dict[str, Any], label: str) -> float | None:
    cls = (task_metrics.get("per_class") or {}).get(label)
    return None if cls is None else float(cls["recall"])


def _negative_is_informative(task_metrics: dict[str, Any], label: str) -> tuple[bool, str]:
    """Does the model's "negative" call carry information (precision above the class's base rate)?

    A degenerate champion that calls everything negative has recall 1.0; holding a real challenger to that
    recall would block every promotion, so such a champion's recall does not vote.
    """
    cls = (task_metrics.get("per_class") or {}).get(label) or {}
    n = int(task_metrics.get("n") or 0)
    base_rate = float(cls.get("support", 0)) / n if n else 0.0
    precision = float(cls.get("precision", 0.0))
    return precision > base_rate, f"precision {precision:.3f} vs base rate {base_rate:.3f}"


def evaluate_gate(champion: Candidate, challenger: Candidate, config: GateConfig) -> GateResult:
    """Apply every rule; the challenger passes only if all voting checks pass."""
    checks: list[Check] = []
    same_labels = champion.labels == challenger.labels
    checks.append(Check("label_maps", same_labels, "identical" if same_labels else
                        f"champion {champion.labels} != challenger {challenger.labels}"))

    champ, chall = _task_metrics(champion.metrics), _task_metrics(challenger.metrics)
    tol = config.macro_f1_tolerance
    for key in sorted(champ.keys() | chall.keys()):
        set_name, task = key
        if key not in champ or key not in chall:
            checks.append(Check(f"macro_f1[{set_name}/{task}]", False, "evaluated for only one of the two models"))
            continue
        n = int(chall[key].get("n", 0))
        old, new = float(champ[key]["macro_f1"]), float(chall[key]["macro_f1"])
        if n < config.min_examples:
            checks.append(Check(f"macro_f1[{set_name}/{task}]", True,
                                f"informational only: {n} examples < {config.min_examples}", old, new))
            continue
        checks.append(Check(f"macro_f1[{set_name}/{task}]", new >= old - tol,
                            f"{new:.4f} vs {old:.4f} (tolerance {tol})", old, new))
        if task == "sentiment":
            r_old, r_new = _recall(champ[key], NEGATIVE), _recall(chall[key], NEGATIVE)
            informative, why = _negative_is_informative(champ[key], NEGATIVE)
            if r_old is None or r_new is None:
                checks.append(Check(f"negative_recall[{set_name}]", True, "no negative examples in this set"))
            elif not informative:
                checks.append(Check(f"negative_recall[{set_name}]", True,
                                    f"informational only: champion's negative calls are uninformative ({why})",
                                    r_old, r_new))
            else:
                checks.append(Check(f"negative_recall[{set_name}]", r_new >= r_old - tol,
                                    f"{r_new:.4f} vs {r_old:.4f} (tolerance {tol})", r_old, r_new))

    lat = challenger.latency_ms_per_text
    if lat is None:
        checks.append(Check("latency", False, "challenger latency was not measured"))
    else:
        checks.append(Check("latency", lat <= config.latency_budget_ms,
                            f"{lat:.2f} ms/text (budget {config.latency_budget_ms} ms)",
                            champion.latency_ms_per_text, lat))
    checks.append(Check("smoke_test", challenger.smoke_ok, challenger.smoke_detail or ("ok" if challenger.smoke_ok else "failed")))
    return GateResult(passed=all(c.passed for c in checks), checks=checks)


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


def render_markdown(report: dict[str, Any]) -> str:
    verdict = "PASSED" if report["passed"] else "REJECTED"
    lines = [
        f"# Promotion gate: {report['challenger']} vs {report['champion']}: {verdict}",
        "",
        "| check | result | champion | challenger | detail |",
        "|---|---|---|---|---|",
    ]
    for c in report["checks"]:
        lines.append(f"| {c['name']} | {'pass' if c['passed'] else 'FAIL'} | {_fmt(c['champion'])} | "
                     f"{_fmt(c['challenger'])} | {c['detail']} |")
    for set_name, tasks in report["per_class"].items():
        for task, rows in tasks.items():
            lines += ["", f"## {set_name} / {task}: per class", "",
                      "| class | champion P / R / F1 | challenger P / R / F1 | delta F1 |", "|---|---|---|---|"]
            for label, row in rows.items():
                def prf(m: dict[str, Any] | None) -> str:
                    return "-" if m is None else f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"
                lines.append(f"| {label} | {prf(row['champion'])} | {prf(row['challenger'])} | {_fmt(row['delta_f1'])} |")
    return "\n".join(lines) + "\n"
