"""Load-time rewrites of an exported ONNX graph for ONNX Runtime's CPU kernels (pure: onnx protos, no session).

``SkipLayerNormalization`` (the contrib op the transformer fusion makes of ``LayerNorm(x + skip + bias)``)
runs about 4x slower on ONNX Runtime 1.32's CPU provider than the plain ``Add`` + ``Add`` +
``LayerNormalization`` it replaces (269 vs 63 us on a 4 x 29 x 384 activation, one thread, AMD EPYC Zen 3:
``benchmarks/bench_skip_layer_norm.py``), and it was 15 % of the engine's kernel time on worker-sized batches
(``benchmarks/profile_engine.py``; BENCHMARKS.md, "Zen 3 EPYC").
Splitting it back at load time fixes every artifact, old and new, without re-exporting; ONNX Runtime's own
``SkipLayerNormFusion`` must then be disabled for the session (``DISABLED_OPTIMIZERS``) or it would fuse
the nodes again. The other fusions (attention, embedding, bias + GELU) stay: they are faster than their parts.
"""

from __future__ import annotations

import onnx
from onnx import helper

# ONNX Runtime graph transformers to skip when creating a session from a rewritten graph.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)

_CONTRIB_DOMAIN = "com.microsoft"


def _attribute(node: onnx.NodeProto, name: str, default: float) -> float:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _split_skip_layer_norm(node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """``[Add(x, bias)], Add(., skip), LayerNormalization(., gamma, beta)`` for one node, or None to keep it.

    Kept when it exports the per-row mean / inverse std-dev (outputs 1 and 2), which plain nodes do not give.
    The optional 4th output (the sum x + skip + bias, used by some fusions) becomes the skip ``Add``'s result.
    """
    outputs = list(node.output)
    if any(outputs[i] for i in (1, 2) if i < len(outputs)):
        return None
    inputs = list(node.input) + [""] * (5 - len(node.input))
    x, skip, gamma, beta, bias = inputs[:5]
    base = node.name or outputs[0]
    nodes: list[onnx.NodeProto] = []
    summed = x
    if bias:
        summed = f"{base}/biased"
        nodes.append(helper.make_node("Add", [x, bias], [summed], name=f"{base}/bias_add"))
    total = outputs[3] if len(outputs) > 3 and outputs[3] else f"{base}/skip_sum"
    nodes.append(helper.make_node("Add", [summed, skip], [total], name=f"{base}/skip_add"))
    norm_inputs = [total, gamma] + ([beta] if beta else [])
    nodes.append(helper.make_node("LayerNormalization", norm_inputs, [outputs[0]], name=f"{base}/layer_norm",
                                  axis=-1, epsilon=_attribute(node, "epsilon", 1e-12)))
    return nodes


def split_skip_layer_norms(model: onnx.ModelProto) -> int:
    """Replace every ``SkipLayerNormalization`` of ``model``'s main graph in place; return how many.

    Node order stays topological (the replacement sits where the node was). Needs opset >= 17 for
    ``LayerNormalization``; an older graph is left untouched (returns 0).
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        return 0
    rewritten: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        replacement = None
        if node.op_type == "SkipLayerNormalization" and node.domain == _CONTRIB_DOMAIN:
            replacement = _split_skip_layer_norm(node)
        if replacement is None:
            rewritten.append(node)
        else:
            rewritten.extend(replacement)
            count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(rewritten)
    return count
