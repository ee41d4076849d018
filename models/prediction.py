"""What the engine returns, and the tiny protocol every classifier implementation satisfies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Prediction:
    """Topic and sentiment of one text, with the version of the model that produced them."""

    topic: str
    topic_confidence: float
    sentiment: str  # negative | neutral | positive
    p_negative: float
    p_neutral: float
    p_positive: float
    model_version: str

    @property
    def score(self) -> float:
        """Sentiment score in [-1, 1]: p(positive) - p(negative)."""
        return self.p_positive - self.p_negative

    @property
    def probabilities(self) -> dict[str, float]:
        return {"negative": self.p_negative, "neutral": self.p_neutral, "positive": self.p_positive}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["score"] = self.score
        return data


class InvalidTextError(ValueError):
    """An input the engine refuses (empty, whitespace-only, not a string); names the offending index."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"text at index {index}: {reason}")
        self.index = index
        self.reason = reason


@runtime_checkable
class Classifier(Protocol):
    """Anything that scores texts: the ONNX/torch engine, or a future remote one."""

    model_version: str

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Score ``texts`` in input order; raise InvalidTextError for a bad one."""
        ...


@runtime_checkable
class ClassifierProvider(Protocol):
    """Hands the stream worker the classifier to use for the next batch.

    The worker calls ``current()`` between batches, never inside one, so a hot reload (a new active model
    version) switches cleanly at a batch boundary and every score keeps the version that produced it.
    """

    def current(self) -> Classifier: ...


class StaticProvider:
    """A provider that always returns the same classifier (no hot reload)."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier

    def current(self) -> Classifier:
        return self._classifier
