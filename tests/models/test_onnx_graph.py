"""Load-time graph rewrites: SkipLayerNormalization split into Add + Add + LayerNormalization, same numbers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.artifact import ONNX_FP32_FILE, ONNX_INT8_FILE
from models.onnx_backend import OnnxRunner
from models.onnx_graph import DISABLED_OPTIMIZERS, split_skip_layer_norms

HIDDEN = 16


def skip_layer_norm_model(with_bias: bool = True, with_beta: bool = True, sum_output: bool = False,
                          stats_outputs: bool = False, opset: int = 17) -> onnx.ModelProto:
    """x, skip -> SkipLayerNormalization -> (y [, sum]) and, downstream, y * 2 (so node order matters)."""
    rng = np.random.default_rng(7)
    initializers = [numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), name)
                    for name in ("gamma", "beta", "bias")]
    inputs = ["x", "skip", "gamma", "beta" if with_beta else "", "bias" if with_bias else ""]
    while inputs[-1] == "":
        inputs.pop()
    outputs = ["y", "mean" if stats_outputs else "", "inv_std" if stats_outputs else "", "sum" if sum_output else ""]
    while outputs[-1] == "":
        outputs.pop()
    nodes = [
        helper.make_node("SkipLayerNormalization", inputs, outputs, name="sln", domain="com.microsoft", epsilon=1e-5),
        helper.make_node("Mul", ["y", "y"], ["z"], name="square"),
    ]
    graph_outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", "s", HIDDEN])]
    if sum_output:
        graph_outputs.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["b", "s", HIDDEN]))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", "s", HIDDEN]) for name in ("x", "skip")],
        graph_outputs, initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], disabled: tuple[str, ...] = ()) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(disabled))
    return session.run(None, feeds)


def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {name: rng.normal(size=(3, 5, HIDDEN)).astype(np.float32) for name in ("x", "skip")}


@pytest.mark.parametrize("with_bias,with_beta,sum_output",
                         [(True, True, False), (False, True, False), (True, False, False), (True, True, True)])
def test_split_gives_the_fused_node_s_numbers(with_bias, with_beta, sum_output):
    fused = skip_layer_norm_model(with_bias, with_beta, sum_output)
    split = skip_layer_norm_model(with_bias, with_beta, sum_output)
    assert split_skip_layer_norms(split) == 1
    ops = [node.op_type for node in split.graph.node]
    assert "SkipLayerNormalization" not in ops
    assert ops.count("Add") == (2 if with_bias else 1) and ops.count("LayerNormalization") == 1
    assert ops[-1] == "Mul"  # the replacement sits where the node was: still topologically sorted
    onnx.checker.check_model(split)
    want, got = run(fused, feeds()), run(split, feeds(), DISABLED_OPTIMIZERS)
    assert len(want) == len(got)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_node_exporting_its_statistics_and_old_opsets_are_left_alone():
    with_stats = skip_layer_norm_model(stats_outputs=True)
    assert split_skip_layer_norms(with_stats) == 0
    assert [n.op_type for n in with_stats.graph.node][0] == "SkipLayerNormalization"
    old = skip_layer_norm_model(opset=16)  # LayerNormalization is opset 17
    assert split_skip_layer_norms(old) == 0


def test_runner_rewrites_the_exported_graph_and_keeps_its_numbers(artifact_dir):
    """The real export (fused fp32 and int8 graphs): every SkipLayerNormalization is split at load time, and the
    fp32 graph then gives the fused graph's logits (int8: dynamic quantization rounds the same activations the
    same way except at scale boundaries, so close logits, not equal ones)."""
    fused_ops = [n.op_type for n in onnx.load(str(artifact_dir / ONNX_FP32_FILE)).graph.node]
    n_fused = fused_ops.count("SkipLayerNormalization")
    assert n_fused >= 12  # two per layer of the 6-layer encoder
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, size=(4, 24)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 15:] = 0
    mask[3, 6:] = 0
    for file, atol in ((ONNX_FP32_FILE, 1e-4), (ONNX_INT8_FILE, None)):
        rewritten = OnnxRunner(artifact_dir / file, threads=1)
        as_exported = OnnxRunner(artifact_dir / file, threads=1, rewrite=False)
        assert rewritten.rewritten_nodes == n_fused and as_exported.rewritten_nodes == 0
        got, want = rewritten(ids, mask), as_exported(ids, mask)
        for a, b in zip(got, want):
            if atol is not None:
                np.testing.assert_allclose(a, b, atol=atol)
            else:  # logits; on the bundled model batch composition alone moves them by up to ~1
                assert np.abs(a - b).max() < 0.1 * np.abs(b).max()
