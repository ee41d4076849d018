"""Why the engine splits SkipLayerNormalization at load time: the fused kernel vs its parts, side by side.

    python benchmarks/bench_skip_layer_norm.py [--rows 4] [--tokens 29] [--hidden 384] [--calls 2000]

One-node ONNX graphs on ONNX Runtime's CPU provider, same inputs, interleaved: (1) the contrib op
``SkipLayerNormalization(x, skip, gamma, beta, bias)`` the transformer fusion produces, (2) the same graph split
by ``models.onnx_graph.split_skip_layer_norms`` (``Add`` + ``Add`` + ``LayerNormalization``), with ONNX Runtime's
re-fusion disabled as the engine does. The default shape is a worker-sized micro-batch of tweets (4 rows of
~29 tokens, MiniLM's 384 wide). Prints microseconds per call for 1 and 2 threads and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def skip_layer_norm_graph(hidden: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), name)
                    for name in ("gamma", "beta", "bias")]
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y"],
                            domain="com.microsoft", epsilon=1e-12)
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", "s", hidden])  # noqa: E731
    graph = helper.make_graph([node], "skip_layer_norm", [value("x"), value("skip")], [value("y")], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.checker.check_model(model)
    return model


def main() -> None:
    import onnxruntime as ort

    from models.onnx_graph import DISABLED_OPTIMIZERS, split_skip_layer_norms

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=29)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    fused = skip_layer_norm_graph(args.hidden)
    split = skip_layer_norm_graph(args.hidden)
    assert split_skip_layer_norms(split) == 1
    rng = np.random.default_rng(1)
    feeds = {name: rng.normal(size=(args.rows, args.tokens, args.hidden)).astype(np.float32) for name in ("x", "skip")}
    print(f"onnxruntime {ort.__version__}, shape {args.rows} x {args.tokens} x {args.hidden}, {args.calls} calls")
    for threads in (1, 2):
        sessions = {}
        for name, model, disabled in (("fused SkipLayerNormalization", fused, ()),
                                      ("split Add+Add+LayerNormalization", split, DISABLED_OPTIMIZERS)):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sessions[name] = ort.InferenceSession(model.SerializeToString(), options,
                                                  providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))
        outputs = [s.run(None, feeds)[0] for s in sessions.values()]
        gap = float(np.abs(outputs[0] - outputs[1]).max())
        micros = dict.fromkeys(sessions, 0.0)
        for _ in range(4):  # interleaved rounds
            for name, session in sessions.items():
                t0 = time.perf_counter()
                for _ in range(args.calls // 4):
                    session.run(None, feeds)
                micros[name] += (time.perf_counter() - t0) / args.calls * 1e6
        (a, ta), (b, tb) = micros.items()
        print(f"{threads} thread(s): {a} {ta:.1f} us, {b} {tb:.1f} us per call: x{ta / tb:.2f} (max |diff| {gap:.1e})")


if __name__ == "__main__":
    main()
