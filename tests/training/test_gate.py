"""Promotion gate rules on hand-written metric dicts (pure: no model, no database)."""

from __future__ import annotations

import copy

from models.labels import label_maps
from training.gate import Candidate, GateConfig, build_report, evaluate_gate


def _task(macro_f1: float, neg_recall: float | None = None, n: int = 100) -> dict:
    per_class = {"neutral": {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": n // 2}}
    if neg_recall is not None:
        per_class["negative"] = {"precision": 0.7, "recall": neg_recall, "f1": 0.7, "support": n // 2}
    return {"accuracy": macro_f1, "macro_f1": macro_f1, "n": n, "per_class": per_class}


def _metrics(sent_f1: float, neg_recall: float, topic_f1: float, feedback_n: int = 100) -> dict:
    return {
        "phrasebank": {"sentiment": _task(sent_f1, neg_recall)},
        "tweet_topic": {"topic": _task(topic_f1)},
        "feedback_recent": {"sentiment": _task(sent_f1, neg_recall, n=feedback_n)},
    }


CONFIG = GateConfig(macro_f1_tolerance=0.01, latency_budget_ms=20.0, min_examples=20)
CHAMPION = Candidate("v1", label_maps(), _metrics(0.80, 0.70, 0.75), latency_ms_per_text=5.0)


def _challenger(**kw) -> Candidate:
    base = dict(version="v2", labels=label_maps(), metrics=_metrics(0.82, 0.72, 0.76), latency_ms_per_text=5.0)
    base.update(kw)
    return Candidate(**base)


def test_better_challenger_passes_every_check():
    result = evaluate_gate(CHAMPION, _challenger(), CONFIG)
    assert result.passed, result.failures
    names = {c.name for c in result.checks}
    assert {"label_maps", "macro_f1[phrasebank/sentiment]", "macro_f1[tweet_topic/topic]",
            "negative_recall[phrasebank]", "latency", "smoke_test"} <= names


def test_drop_within_tolerance_passes_beyond_it_fails():
    assert evaluate_gate(CHAMPION, _challenger(metrics=_metrics(0.795, 0.70, 0.75)), CONFIG).passed
    result = evaluate_gate(CHAMPION, _challenger(metrics=_metrics(0.80, 0.70, 0.70)), CONFIG)
    assert not result.passed
    assert [c.name for c in result.failures] == ["macro_f1[tweet_topic/topic]"]


def test_lower_negative_recall_fails_even_when_macro_f1_rises():
    result = evaluate_gate(CHAMPION, _challenger(metrics=_metrics(0.85, 0.60, 0.80)), CONFIG)
    assert {c.name for c in result.failures} == {"negative_recall[phrasebank]", "negative_recall[feedback_recent]"}


def test_label_map_change_fails():
    labels = copy.deepcopy(label_maps())
    labels["sentiment"] = ["negative", "positive", "neutral"]
    result = evaluate_gate(CHAMPION, _challenger(labels=labels), CONFIG)
    assert [c.name for c in result.failures] == ["label_maps"]


def test_latency_over_budget_or_unmeasured_fails():
    assert [c.name for c in evaluate_gate(CHAMPION, _challenger(latency_ms_per_text=25.0), CONFIG).failures] == ["latency"]
    assert [c.name for c in evaluate_gate(CHAMPION, _challenger(latency_ms_per_text=None), CONFIG).failures] == ["latency"]


def test_failed_smoke_test_fails():
    result = evaluate_gate(CHAMPION, _challenger(smoke_ok=False, smoke_detail="probabilities sum to 1.7"), CONFIG)
    assert [(c.name, c.detail) for c in result.failures] == [("smoke_test", "probabilities sum to 1.7")]


def test_tiny_eval_set_is_reported_but_does_not_vote():
    champion = Candidate("v1", label_maps(), _metrics(0.80, 0.70, 0.75, feedback_n=5), latency_ms_per_text=5.0)
    worse_on_tiny = _metrics(0.82, 0.72, 0.76, feedback_n=5)
    worse_on_tiny["feedback_recent"]["sentiment"]["macro_f1"] = 0.2
    result = evaluate_gate(champion, _challenger(metrics=worse_on_tiny), CONFIG)
    assert result.passed
    check = next(c for c in result.checks if c.name == "macro_f1[feedback_recent/sentiment]")
    assert "informational" in check.detail and check.challenger == 0.2


def test_set_missing_for_one_model_fails():
    metrics = _metrics(0.82, 0.72, 0.76)
    del metrics["tweet_topic"]
    result = evaluate_gate(CHAMPION, _challenger(metrics=metrics), CONFIG)
    assert [c.name for c in result.failures] == ["macro_f1[tweet_topic/topic]"]


def test_report_has_per_class_comparison_and_markdown():
    challenger = _challenger(metrics=_metrics(0.80, 0.60, 0.75))
    result = evaluate_gate(CHAMPION, challenger, CONFIG)
    report = build_report(CHAMPION, challenger, result, CONFIG, extra={"train_examples": 10})
    assert report["passed"] is False and report["train_examples"] == 10
    row = report["per_class"]["phrasebank"]["sentiment"]["negative"]
    assert row["champion"]["recall"] == 0.70 and row["challenger"]["recall"] == 0.60
    assert "REJECTED" in report["markdown"]
    assert "| negative_recall[phrasebank] | FAIL |" in report["markdown"]
    assert "## phrasebank / sentiment: per class" in report["markdown"]


def test_degenerate_all_negative_champion_recall_does_not_block_a_real_model():
    degenerate = _metrics(0.30, 1.0, 0.75)
    for task in (degenerate["phrasebank"]["sentiment"], degenerate["feedback_recent"]["sentiment"]):
        task["per_class"]["negative"]["precision"] = 0.5  # == base rate (support 50 of 100): no information
    champion = Candidate("v0", label_maps(), degenerate, latency_ms_per_text=5.0)
    result = evaluate_gate(champion, _challenger(metrics=_metrics(0.80, 0.72, 0.76)), CONFIG)
    assert result.passed, result.failures
    check = next(c for c in result.checks if c.name == "negative_recall[phrasebank]")
    assert "uninformative" in check.detail
