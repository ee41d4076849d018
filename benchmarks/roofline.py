"""Compute ceiling of a CPU for the encoder: multiply-adds per text, and the GEMM rate the cores can reach.

Why: the engine-vs-baseline speed bars are ratios of two paths of the *same* model on the same cores. When
both paths already run their matrix products near the cores' measured GEMM rate, the ratio cannot exceed
(baseline's padded work / engine's work) x (GEMM ceiling / baseline's achieved rate), whatever the engine
does. This module counts the work (pure arithmetic, tested against torch's FLOP counter) and measures the
ceiling (large GEMMs of the model's own FFN shape in torch fp32, ONNX Runtime fp32 and ONNX Runtime dynamic
int8, the kernels the two paths use), so ``bench_engine.py`` can say how far each path is from it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# rows of the ceiling GEMM: enough that the measured rate is the kernel's, not its start-up
GEMM_ROWS = 2048


@dataclass(frozen=True)
class EncoderShape:
    """The numbers of a BERT-style encoder that decide its matrix work."""

    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def from_config(cls, config: dict) -> EncoderShape:
        return cls(int(config["num_hidden_layers"]), int(config["hidden_size"]), int(config["intermediate_size"]))

    def macs_per_token(self) -> int:
        """Projections per token and layer: Q, K, V and output (4 h^2) plus the two FFN matrices (2 h i)."""
        return self.layers * (4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate)

    def macs(self, rows: int, width: int) -> int:
        """Multiply-adds of one padded batch of ``rows`` sequences of ``width`` tokens: the projections on every
        (padded) token plus attention scores and their weighted sum (2 x width^2 x h per sequence and layer).
        Embedding lookups, LayerNorm, GELU, softmax and the tiny heads are left out (not matrix products)."""
        per_sequence = width * self.macs_per_token() + self.layers * 2 * width * width * self.hidden
        return rows * per_sequence


def batches_macs(shape: EncoderShape, batches: Iterable[tuple[int, int]]) -> int:
    """Total multiply-adds of padded batches given as (rows, width)."""
    return sum(shape.macs(rows, width) for rows, width in batches)


def engine_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None, max_padding: float | None = None
) -> list[tuple[int, int]]:
    """(rows, width) of the engine's length-sorted micro-batches, as ``models.batching.plan_batches`` cuts them."""
    from models.batching import plan_batches

    return [(len(b), max(lengths[i] for i in b)) for b in plan_batches(lengths, batch_size, max_tokens, max_padding)]


def _best_rate(run, macs: int, repeats: int) -> float:
    """Best-of-``repeats`` multiply-adds per second of ``run()`` after two warm-up calls."""
    run(), run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return macs / best


def gemm_ceiling(shape: EncoderShape, threads: int, rows: int = GEMM_ROWS, repeats: int = 20) -> dict[str, float]:
    """GMAC/s of one (rows x hidden) @ (hidden x intermediate) product, the encoder's largest, in the three
    kernels the benchmark's paths use: torch fp32, ONNX Runtime fp32 MatMul, ONNX Runtime dynamic int8
    (DynamicQuantizeLinear + MatMulInteger, as ``quantize_dynamic`` writes the engine's graph)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    k, n = shape.hidden, shape.intermediate
    macs = rows * k * n
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((rows, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    torch.set_num_threads(threads)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    rates = {"torch fp32": _best_rate(lambda: tx @ tw, macs, repeats)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "matmul.onnx", Path(tmp) / "matmul.int8.onnx"
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["X", "W"], ["Y"])], "ffn",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, k])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
            [helper.make_tensor("W", TensorProto.FLOAT, [k, n], w.flatten())],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32_path))
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
        for name, path in (("onnxruntime fp32", fp32_path), ("onnxruntime int8", int8_path)):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            rates[name] = _best_rate(lambda s=session: s.run(None, {"X": x}), macs, repeats)
    return {name: rate / 1e9 for name, rate in rates.items()}
