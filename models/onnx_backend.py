"""ONNX Runtime runtime for the engine: the int8 export on CPU (no torch import on this path).

One ``InferenceSession`` with ``intra_op_num_threads`` = the configured threads (default: all cores).
``InferenceSession.run`` is safe to call from several threads; the engine still expects one caller at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxRunner:
    """(input_ids, attention_mask) numpy int64 -> (sentiment_logits, topic_logits) numpy float32."""

    device = "cpu"
    precision = "int8"

    def __init__(self, model_path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        self.threads = threads

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sentiment, topic = self.session.run(
            ["sentiment_logits", "topic_logits"],
            {"input_ids": input_ids.astype(np.int64, copy=False), "attention_mask": attention_mask.astype(np.int64, copy=False)},
        )
        return sentiment, topic
