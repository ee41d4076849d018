"""The inference engine: ``load_engine(path).classify(texts) -> list[Prediction]``.

Like a Hugging Face pipeline it runs preprocess (validate, tokenize, truncate) -> forward (length-sorted
micro-batches, each padded only to its own longest text) -> postprocess (softmax, labels, model version),
and returns results in input order. The forward runtime is chosen by ``models.devices``:

* CUDA: torch with bf16/fp16 autocast; an out-of-memory batch is halved and retried;
* CPU: ONNX Runtime on the int8 export (the fastest CPU path measured, see BENCHMARKS.md), without
  importing torch at all; ``backend="torch"`` runs fp32 torch for comparison.

Preprocessing (``models.preprocess``) is the version the artifact names, so serving feeds the model exactly
what training did; per-head softmax temperatures from the artifact (calibration) are applied to the
probabilities only, so labels (argmax) never change.

Threading: an Engine holds no per-call state except the torch runner's OOM counter; use one engine from one
thread at a time (e.g. a single-thread executor in the stream worker). ONNX Runtime runs N micro-batches at
once on N sessions of ``threads // N`` threads each (``sessions``, default ``auto``: up to two single-thread
sessions, better on small headline batches than one session's intra-op threads, see BENCHMARKS.md).

This module does not read settings: ``load_engine`` takes every knob as an explicit parameter and the
composition root (``marketmood/``) maps its settings onto it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import structlog

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
from models.batching import pad_batch, plan_batches, restore_order, unique_sequences
from models.devices import choose_backend, choose_device, cpu_threads, cuda_available
from models.labels import SENTIMENT_LABELS
from models.prediction import InvalidTextError, Prediction
from models.text_encoder import TextEncoder, validate_texts

log = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 64
# Cap on rows x padded width per micro-batch: 64 headlines of 128 tokens, but only 16 articles of 512.
DEFAULT_MAX_BATCH_TOKENS = 8192
# CPU micro-batches pad each text by at most 10% of the batch width: padding is wasted matrix work, and on a
# CPU near its GEMM ceiling smaller batches cost little (x1.8 on 32-headline requests, BENCHMARKS.md). On
# CUDA ("auto") there is no such limit: big batches amortise kernel launches (not measured: no GPU was lent).
DEFAULT_CPU_MAX_PADDING = 0.1
# "auto" sessions: two ONNX sessions side by side once there are two threads to split. On worker-sized requests
# the padding-limited micro-batches are small (~4 tweets), little work for intra-op threads; two sessions of one
# thread each ran them 6-7 % faster than one session of two threads on a 2-core Zen 3 EPYC (no gain on 150-text
# requests; BENCHMARKS.md). Not measured on bigger hosts, hence no more than two.
AUTO_SESSIONS_MAX = 2


class Runner(Protocol):
    """A device runtime: padded int64 batch -> (sentiment_logits, topic_logits) as float arrays.

    A runner may also offer ``run_many(batches)`` to run several padded batches concurrently.
    """

    device: Any
    precision: str

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64, so each row sums to 1 within float rounding."""
    z = logits.astype(np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
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
        max_padding: float | None = None,
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
        self.max_padding = max_padding
        self.backend = backend
        self.sentiment_labels = sentiment_labels
        self.topic_labels = list(info.labels["topic"])
        self._sentiment_columns = [sentiment_labels.index(name) for name in SENTIMENT_LABELS]
        temperatures: Mapping[str, float] = info.temperatures or {}
        self.temperatures = {head: float(temperatures.get(head, 1.0)) for head in ("sentiment", "topic")}
        if min(self.temperatures.values()) <= 0:
            raise ArtifactError(f"artifact temperatures must be > 0, got {self.temperatures}")

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
            "max_padding": self.max_padding,
            "preprocessing": self.encoder.preprocessing,
            "temperatures": self.temperatures,
            "sessions": getattr(self.runner, "sessions", 1),
            "rewritten_nodes": getattr(self.runner, "rewritten_nodes", 0),
        }

    # -- pipeline steps -------------------------------------------------------------------------------
    def preprocess(self, texts: Sequence[str]) -> list[list[int]]:
        """Validate (InvalidTextError names the bad index) and tokenize, truncating to ``max_length``.

        A text that tokenizes to no word piece at all (U+FFFD replacement characters a broken feed leaves,
        ``&#8203;``, private-use or lone combining characters) is refused too: the model would score the empty
        sequence and return a confident-looking guess."""
        encoded = self.encoder.encode(validate_texts(texts))
        for index, ids in enumerate(encoded):
            if len(ids) <= self.encoder.special_tokens:
                raise InvalidTextError(index, "nothing the model can read: the text tokenizes to no word piece")
        return encoded

    def forward(self, token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Logits in input order, computed once per distinct text in length-sorted micro-batches padded to their
        longest text (and, with ``max_padding``, cut wherever a text would be padded by more than that fraction)."""
        if len(token_ids) == 0:
            return np.zeros((0, len(self.sentiment_labels)), np.float32), np.zeros((0, len(self.topic_labels)), np.float32)
        token_ids, inverse = unique_sequences(token_ids)  # repeated texts are scored once
        n = len(token_ids)
        batches = plan_batches([len(t) for t in token_ids], self.batch_size, self.max_batch_tokens, self.max_padding)
        padded = [pad_batch([token_ids[i] for i in indices], self.encoder.pad_id) for indices in batches]
        run_many = getattr(self.runner, "run_many", None)
        outputs = run_many(padded) if run_many else [self.runner(ids, mask) for ids, mask in padded]
        results = [list(zip(sentiment, topic)) for sentiment, topic in outputs]
        rows = restore_order(batches, results, n)
        sentiment, topic = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        return sentiment[inverse], topic[inverse]

    def postprocess(self, sentiment_logits: np.ndarray, topic_logits: np.ndarray) -> list[Prediction]:
        sentiment, topic = self._probabilities(sentiment_logits, topic_logits)
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

    def _probabilities(self, sentiment_logits: np.ndarray, topic_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities; sentiment columns reordered to negative, neutral, positive."""
        sentiment = softmax(sentiment_logits, self.temperatures["sentiment"])[:, self._sentiment_columns]
        return sentiment, softmax(topic_logits, self.temperatures["topic"])

    # -- public API -----------------------------------------------------------------------------------
    def predict_logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(sentiment_logits, topic_logits) in the artifact's label order, one row per text."""
        return self.forward(self.preprocess(texts))

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities: sentiment columns in ``models.labels.SENTIMENT_LABELS`` order, topic in the artifact's."""
        return self._probabilities(*self.predict_logits(texts))

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


def choose_runtime(artifact_dir: Path, device: str = "auto", backend: str = "auto", *,
                   cuda_ok: bool | None = None) -> tuple[str, str]:
    """(device, backend) that :func:`load_engine` serves ``artifact_dir`` on, without loading it: the one rule,
    also used to name the runtime that scored a teacher's soft labels (``training.distill.teacher_runtime``).
    ``cuda_ok``: whether this machine has a usable GPU (None = ask it)."""
    if device == "auto" and backend == "onnx":
        device = "cpu"  # the int8 export is CPU-only: do not even probe for CUDA
    if cuda_ok is None:
        cuda_ok = cuda_available() if device in ("auto", "cuda") else False
    chosen_device = choose_device(device, cuda_ok)
    onnx_ok, torch_ok = has_onnx(artifact_dir), has_torch_weights(artifact_dir)
    if chosen_device == "cuda" and device == "auto" and backend == "auto" and not torch_ok:
        log.warning("engine.cuda_without_torch_weights", path=str(artifact_dir),
                    detail="artifact holds only the int8 ONNX export: serving on CPU")
        chosen_device = "cpu"
    return chosen_device, choose_backend(backend, chosen_device, onnx_ok, torch_ok)


def load_engine(
    path: Path | str | None = None,
    *,
    device: str = "auto",
    backend: str = "auto",
    max_length: int | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    max_padding: float | Literal["auto", "off"] = "auto",
    sessions: int | Literal["auto"] = "auto",
    rewrite_graph: bool = True,
) -> Engine:
    """Load an artifact folder (default: the bundled model) on the fastest runtime for this machine.

    ``device``: auto | cpu | cuda (cuda without a GPU is an error; auto falls back to CPU).
    ``backend``: auto | onnx | torch (auto: torch fp16/bf16 on CUDA when the artifact has torch weights,
    else ONNX int8 on CPU). ``max_length``: token limit override (None = the artifact's training length).
    ``batch_size`` / ``max_batch_tokens``: micro-batch caps. ``max_padding``: largest padded fraction of a row
    (auto: ``DEFAULT_CPU_MAX_PADDING`` on CPU, off on CUDA). ``threads``: CPU threads (None = all cores).
    ``sessions``: ONNX sessions run concurrently (threads are split between them; auto: ``resolve_sessions``).
    ``rewrite_graph``: apply ``models.onnx_graph``'s load-time rewrites to the ONNX graph (off only to measure them).
    """
    artifact_dir = Path(path) if path is not None else BUNDLED_MODEL_DIR
    info = read_info(artifact_dir)
    chosen_device, chosen_backend = choose_runtime(artifact_dir, device, backend)
    n_threads = cpu_threads(threads)
    n_sessions = resolve_sessions(sessions, n_threads)
    encoder = TextEncoder(artifact_dir / TOKENIZER_DIR, resolve_max_length(max_length, info, _position_limit(artifact_dir)),
                          info.preprocessing)

    runner: Runner
    if chosen_backend == "onnx":
        from models.onnx_backend import OnnxRunner

        runner = OnnxRunner(artifact_dir / ONNX_INT8_FILE, n_threads, sessions=n_sessions, rewrite=rewrite_graph)
    else:
        # torch is imported only on this path (heavy optional dependency of the CPU image)
        from models.torch_backend import TorchRunner, load_torch_model

        runner = TorchRunner(load_torch_model(artifact_dir, info), chosen_device, threads=n_threads)
    return Engine(
        encoder,
        runner,
        info,
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        max_batch_tokens=max_batch_tokens,
        max_padding=resolve_max_padding(max_padding, chosen_device),
        backend=chosen_backend,
    )


def resolve_sessions(requested: int | str, threads: int) -> int:
    """``auto`` -> one session per thread up to ``AUTO_SESSIONS_MAX``; a number >= 1 as given."""
    if requested == "auto":
        return max(1, min(threads, AUTO_SESSIONS_MAX))
    value = int(requested)
    if value < 1:
        raise ValueError(f"sessions must be >= 1 or 'auto', got {requested!r}")
    return value


def resolve_max_padding(requested: float | str, device: str) -> float | None:
    """``auto`` -> the CPU default or no limit on CUDA; ``off`` -> no limit; a number in [0, 1) as given."""
    if requested == "auto":
        return None if device == "cuda" else DEFAULT_CPU_MAX_PADDING
    if requested == "off":
        return None
    value = float(requested)
    if not 0 <= value < 1:
        raise ValueError(f"max_padding must be in [0, 1), 'auto' or 'off', got {requested!r}")
    return value
