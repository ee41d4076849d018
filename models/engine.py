"""The inference engine: ``load_engine(path).classify(texts) -> list[Prediction]``.

Like a Hugging Face pipeline it runs preprocess (validate, tokenize, truncate) -> forward (length-sorted
micro-batches, each padded only to its own longest text) -> postprocess (softmax, labels, model version),
and returns results in input order. The forward runtime is chosen by ``models.devices``:

* CUDA: torch with bf16/fp16 autocast; an out-of-memory batch is halved and retried;
* CPU: ONNX Runtime on the int8 export (the fastest CPU path measured, see BENCHMARKS.md), without
  importing torch at all; ``backend="torch"`` runs fp32 torch for comparison.

Threading: an Engine holds no per-call state except the torch runner's OOM counter; use one engine from one
thread at a time (e.g. a single-thread executor in the stream worker). ONNX Runtime itself parallelises each
batch over ``threads`` cores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.artifact import (
    BUNDLED_MODEL_DIR,
    ENCODER_CONFIG_FILE,
    ONNX_INT8_FILE,
    TOKENIZER_DIR,
    ArtifactError,
    ArtifactInfo,
    has_onnx,
    has_torch_weights,
    read_info,
)
from models.batching import pad_batch, plan_batches, restore_order
from models.devices import choose_backend, choose_device, cpu_threads, cuda_available
from models.labels import SENTIMENT_LABELS
from models.prediction import Prediction
from models.text_encoder import TextEncoder, validate_texts

DEFAULT_BATCH_SIZE = 64
# Cap on rows x padded width per micro-batch: 64 headlines of 128 tokens, but only 16 articles of 512.
DEFAULT_MAX_BATCH_TOKENS = 8192


class Runner(Protocol):
    """A device runtime: padded int64 batch -> (sentiment_logits, topic_logits) as float arrays."""

    device: Any
    precision: str

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, so each row sums to 1 within float rounding."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Engine:
    """Scores texts with one artifact on one runtime; implements ``models.prediction.Classifier``."""

    def __init__(
        self,
        encoder: TextEncoder,
        runner: Runner,
        info: ArtifactInfo,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
        backend: str = "onnx",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sentiment_labels = list(info.labels["sentiment"])
        if sorted(sentiment_labels) != sorted(SENTIMENT_LABELS):
            raise ArtifactError(f"artifact sentiment labels {sentiment_labels} are not {list(SENTIMENT_LABELS)}")
        self.encoder = encoder
        self.runner = runner
        self.info = info
        self.model_version = info.version
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.backend = backend
        self.sentiment_labels = sentiment_labels
        self.topic_labels = list(info.labels["topic"])
        self._sentiment_columns = [sentiment_labels.index(name) for name in SENTIMENT_LABELS]

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def describe(self) -> dict[str, Any]:
        """What is running, for logs and benchmarks."""
        return {
            "model_version": self.model_version,
            "backend": self.backend,
            "device": str(self.runner.device),
            "precision": self.runner.precision,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
        }

    # -- pipeline steps -------------------------------------------------------------------------------
    def preprocess(self, texts: Sequence[str]) -> list[list[int]]:
        """Validate (InvalidTextError names the bad index) and tokenize, truncating to ``max_length``."""
        return self.encoder.encode(validate_texts(texts))

    def forward(self, token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Logits in input order, computed in length-sorted micro-batches padded to their longest text."""
        n = len(token_ids)
        if n == 0:
            return np.zeros((0, len(self.sentiment_labels)), np.float32), np.zeros((0, len(self.topic_labels)), np.float32)
        batches = plan_batches([len(t) for t in token_ids], self.batch_size, self.max_batch_tokens)
        results = []
        for indices in batches:
            ids, mask = pad_batch([token_ids[i] for i in indices], self.encoder.pad_id)
            sentiment, topic = self.runner(ids, mask)
            results.append(list(zip(sentiment, topic)))
        rows = restore_order(batches, results, n)
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def postprocess(self, sentiment_logits: np.ndarray, topic_logits: np.ndarray) -> list[Prediction]:
        sentiment = softmax(sentiment_logits)[:, self._sentiment_columns]  # columns: negative, neutral, positive
        topic = softmax(topic_logits)
        best_sentiment = sentiment.argmax(axis=1)
        best_topic = topic.argmax(axis=1)
        return [
            Prediction(
                topic=self.topic_labels[int(t)],
                topic_confidence=float(topic[row, t]),
                sentiment=SENTIMENT_LABELS[int(s)],
                p_negative=float(sentiment[row, 0]),
                p_neutral=float(sentiment[row, 1]),
                p_positive=float(sentiment[row, 2]),
                model_version=self.model_version,
            )
            for row, (s, t) in enumerate(zip(best_sentiment, best_topic))
        ]

    # -- public API -----------------------------------------------------------------------------------
    def predict_logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(sentiment_logits, topic_logits) in the artifact's label order, one row per text."""
        return self.forward(self.preprocess(texts))

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities: sentiment columns in ``models.labels.SENTIMENT_LABELS`` order, topic in the artifact's."""
        sentiment_logits, topic_logits = self.predict_logits(texts)
        return softmax(sentiment_logits)[:, self._sentiment_columns], softmax(topic_logits)

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Topic and sentiment for each text, in input order."""
        return self.postprocess(*self.predict_logits(texts))


def _position_limit(artifact_dir: Path) -> int | None:
    path = artifact_dir / ENCODER_CONFIG_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("max_position_embeddings")
    return int(value) if value else None


def resolve_max_length(requested: int | None, info: ArtifactInfo, position_limit: int | None) -> int:
    """The token limit: the override if given, else what the model was trained with; never past positions."""
    length = requested if requested is not None else info.max_length
    if length < 3:
        raise ValueError(f"max_length must be >= 3 (room for [CLS] x [SEP]), got {length}")
    return min(length, position_limit) if position_limit else length


def load_engine(
    path: Path | str | None = None,
    *,
    device: str = "auto",
    backend: str = "auto",
    max_length: int | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
) -> Engine:
    """Load an artifact folder (default: the bundled model) on the fastest runtime for this machine."""
    artifact_dir = Path(path) if path is not None else BUNDLED_MODEL_DIR
    info = read_info(artifact_dir)
    if device == "auto" and backend == "onnx":
        device = "cpu"  # the int8 export is CPU-only: do not even probe for CUDA
    chosen_device = choose_device(device, cuda_available() if device in ("auto", "cuda") else False)
    chosen_backend = choose_backend(backend, chosen_device, has_onnx(artifact_dir), has_torch_weights(artifact_dir))
    n_threads = cpu_threads(threads)
    encoder = TextEncoder(artifact_dir / TOKENIZER_DIR, resolve_max_length(max_length, info, _position_limit(artifact_dir)))

    runner: Runner
    if chosen_backend == "onnx":
        from models.onnx_backend import OnnxRunner

        runner = OnnxRunner(artifact_dir / ONNX_INT8_FILE, n_threads)
    else:
        from models.torch_backend import TorchRunner, load_torch_model

        runner = TorchRunner(load_torch_model(artifact_dir, info), chosen_device, threads=n_threads)
    return Engine(
        encoder,
        runner,
        info,
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        max_batch_tokens=max_batch_tokens,
        backend=chosen_backend,
    )


def engine_from_settings(settings: Any = None) -> Engine:
    """Load the engine described by ``Settings.model`` (path, device, backend, limits, threads)."""
    if settings is None:
        from marketmood.settings import get_settings

        settings = get_settings()
    model = settings.model
    explicit = model.model_fields_set
    return load_engine(
        model.path,
        device=model.device,
        backend=model.backend,
        # the artifact knows the length it was trained with; only an explicit setting overrides it
        max_length=model.max_length if "max_length" in explicit else None,
        batch_size=model.batch_size,
        threads=model.threads,
        max_batch_tokens=model.max_batch_tokens,
    )
