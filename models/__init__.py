"""Inference engine: label maps, the two-headed network, tokenizer-aware batching, devices and export.

Entry point for callers (stream workers, the HTTP API, benchmarks)::

    from models import load_engine
    engine = load_engine()            # bundled default model, fastest path for this machine
    engine.classify(["Fed hikes rates by 75bp"])  # -> list[Prediction]
"""

from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from models.prediction import Classifier, ClassifierProvider, InvalidTextError, Prediction, StaticProvider

__all__ = ["SENTIMENT_LABELS", "TOPIC_LABELS", "Classifier", "ClassifierProvider", "StaticProvider", "InvalidTextError", "Prediction", "load_engine"]


def __getattr__(name: str):  # lazy: importing label maps must not import torch/onnxruntime
    if name == "load_engine":
        from models.engine import load_engine

        return load_engine
    raise AttributeError(name)
