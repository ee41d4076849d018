"""The check every new model passes before it judges or serves: sample texts, and what valid output looks like.

Used by the promotion gate's smoke test (``training.retrain``) and by hot reload before a swap
(``marketmood.hot_reload``): one definition, so a model the gate accepts is one a worker will load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models.labels import SENTIMENT_LABELS, TOPIC_LABELS

SMOKE_TEXTS = (
    "Shares plunge after the company cuts its full-year profit forecast",
    "Central bank holds rates steady, signals patience",
    "Record quarterly revenue beats analyst estimates; stock jumps 8%",
)


def check_predictions(predictions: Sequence[Any], n_texts: int, version: str) -> list[str]:
    """Problems with a batch of predictions (empty list = valid)."""
    problems: list[str] = []
    if len(predictions) != n_texts:
        problems.append(f"{len(predictions)} predictions for {n_texts} texts")
    for i, p in enumerate(predictions):
        probs = (p.p_negative, p.p_neutral, p.p_positive)
        if not all(0.0 <= x <= 1.0 and math.isfinite(x) for x in probs) or abs(sum(probs) - 1.0) > 1e-3:
            problems.append(f"text {i}: sentiment probabilities {probs} are not a distribution")
        if p.sentiment not in SENTIMENT_LABELS or p.topic not in TOPIC_LABELS:
            problems.append(f"text {i}: unknown label {p.sentiment!r}/{p.topic!r}")
        if not 0.0 <= p.topic_confidence <= 1.0:
            problems.append(f"text {i}: topic confidence {p.topic_confidence}")
        if p.model_version != version:
            problems.append(f"text {i}: model_version {p.model_version!r} != {version!r}")
    return problems
