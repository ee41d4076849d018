"""The output check the gate's smoke test and hot reload's canary share: each kind of broken output is named."""

from __future__ import annotations

import math

from models.prediction import Prediction
from models.smoke import SMOKE_TEXTS, check_predictions


def _ok(version: str = "v1") -> Prediction:
    return Prediction("Markets", 0.7, "neutral", 0.2, 0.6, 0.2, version)


def test_valid_predictions_have_no_problems() -> None:
    assert check_predictions([_ok() for _ in SMOKE_TEXTS], len(SMOKE_TEXTS), "v1") == []


def test_each_broken_output_is_named() -> None:
    broken = [
        Prediction("Markets", 0.7, "neutral", 0.2, 0.6, 0.3, "v1"),  # sums to 1.1
        Prediction("Markets", 0.7, "neutral", math.nan, 0.6, 0.2, "v1"),
        Prediction("Weather", 0.7, "neutral", 0.2, 0.6, 0.2, "v1"),
        Prediction("Markets", 1.5, "neutral", 0.2, 0.6, 0.2, "v1"),
        _ok("v0"),
    ]
    problems = check_predictions(broken, 6, "v1")
    assert problems[0] == "5 predictions for 6 texts"
    assert [p.split(":")[0] for p in problems[1:]] == ["text 0", "text 1", "text 2", "text 3", "text 4"]
    for needle in ("not a distribution", "unknown label 'neutral'/'Weather'", "topic confidence 1.5",
                   "model_version 'v0' != 'v1'"):
        assert any(needle in p for p in problems), (needle, problems)
