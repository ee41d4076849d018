"""ONNX Runtime runtime for the engine: the int8 export on CPU (no torch import on this path).

``sessions=1``: one ``InferenceSession`` with ``intra_op_num_threads`` = the configured threads. With
``sessions=N`` the runner holds N sessions of ``threads // N`` intra-op threads each and ``run_many`` runs
N micro-batches at once (ONNX Runtime releases the GIL): on small headline batches intra-op parallelism
has little work per thread, so whole batches side by side keep the cores busier (see BENCHMARKS.md).
The graph is rewritten at load time (``models.onnx_graph``: SkipLayerNormalization split back into its
parts, which ONNX Runtime's CPU kernels run faster) unless ``rewrite=False``.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from models.onnx_graph import DISABLED_OPTIMIZERS, split_skip_layer_norms

OUTPUTS = ["sentiment_logits", "topic_logits"]


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def load_graph(model_path: Path, rewrite: bool) -> tuple[str | bytes, list[str], int]:
    """The model for ``InferenceSession`` (a path, or the rewritten graph's bytes), the optimizers to skip and
    how many nodes were rewritten."""
    if not rewrite:
        return str(model_path), [], 0
    model = onnx.load(str(model_path))
    rewritten = split_skip_layer_norms(model)
    if not rewritten:
        return str(model_path), [], 0
    return model.SerializeToString(), list(DISABLED_OPTIMIZERS), rewritten


class OnnxRunner:
    """(input_ids, attention_mask) numpy int64 -> (sentiment_logits, topic_logits) numpy float32."""

    device = "cpu"
    precision = "int8"

    def __init__(self, model_path: Path, threads: int, sessions: int = 1, rewrite: bool = True) -> None:
        if sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {sessions}")
        per_session = max(1, threads // sessions)
        graph, disabled, self.rewritten_nodes = load_graph(Path(model_path), rewrite)
        self._sessions = [
            ort.InferenceSession(graph, sess_options=session_options(per_session), providers=["CPUExecutionProvider"],
                                 disabled_optimizers=disabled)
            for _ in range(sessions)
        ]
        del graph
        self.session = self._sessions[0]
        self.threads = threads
        self.sessions = sessions
        self._idle: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in self._sessions:
            self._idle.put(session)
        self._pool = ThreadPoolExecutor(max_workers=sessions, thread_name_prefix="onnx") if sessions > 1 else None

    def _run(self, session: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sentiment, topic = session.run(
            OUTPUTS,
            {"input_ids": input_ids.astype(np.int64, copy=False), "attention_mask": attention_mask.astype(np.int64, copy=False)},
        )
        return sentiment, topic

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(self.session, input_ids, attention_mask)

    def _run_pooled(self, batch: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        session = self._idle.get()  # each session serves one batch at a time
        try:
            return self._run(session, *batch)
        finally:
            self._idle.put(session)

    def run_many(self, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run padded batches, ``sessions`` at a time; results in batch order.

        A lone batch of several rows (one text length, or a single request's worth) is cut into one piece per
        session, each trimmed to its own longest row, so single-thread sessions do not leave cores idle.
        """
        if self._pool is None or not batches:
            return [self(ids, mask) for ids, mask in batches]
        if len(batches) == 1:
            ids, mask = batches[0]
            if ids.shape[0] < 2:
                return [self(ids, mask)]
            pieces = np.array_split(np.arange(ids.shape[0]), min(self.sessions, ids.shape[0]))
            widths = [int(mask[rows].sum(axis=1).max()) for rows in pieces]
            trimmed = [(ids[rows, :width], mask[rows, :width]) for rows, width in zip(pieces, widths)]
            outputs = list(self._pool.map(self._run_pooled, trimmed))
            return [(np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs]))]
        return list(self._pool.map(self._run_pooled, batches))
