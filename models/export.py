"""Write model artifacts: the torch artifact (training's output) and its int8 ONNX export (the CPU path).

``save_torch_artifact`` is what training calls; ``export_onnx_int8`` turns that folder's fp32 weights into a
dynamic-int8 ONNX graph (measured ~x3-4 faster than torch fp32 on 2 CPU cores); ``slim_copy`` keeps only what
the committed default model needs (int8 export, tokenizer, label maps, card: well under 25 MB).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from models.artifact import (
    ENCODER_CONFIG_FILE,
    FP16_WEIGHTS_FILE,
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    ArtifactInfo,
    read_info,
    write_info,
)
from models.network import MultiTaskClassifier

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("sentiment_logits", "topic_logits")
# Training checkpoints (optimizer state, 300+ MB) never belong in a shipped artifact; the bundled model stays
# under 25 MB, so it keeps neither fp32 nor fp16 weights (registry artifacts keep the fp16 copy for GPUs).
SLIM_EXCLUDE = frozenset({WEIGHTS_FILE, FP16_WEIGHTS_FILE, ONNX_FP32_FILE, "checkpoints"})


def serializable_config(config_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the entries of an HF config dict that JSON cannot hold (dtypes, callables, ...)."""
    out: dict[str, Any] = {}
    for key, value in config_dict.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out


def save_torch_artifact(
    model: MultiTaskClassifier, tokenizer: Any, out_dir: Path, info: ArtifactInfo, fp16_copy: bool = False
) -> None:
    """Write artifact.json, encoder_config.json, tokenizer/ and model.safetensors (fp32) into ``out_dir``.

    ``fp16_copy`` also writes model.fp16.safetensors: a registry artifact packed without its fp32 weights
    still serves on a GPU from it (half the size of fp32).
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_info(out_dir, info)
    config = serializable_config(model.encoder.config.to_dict())
    (out_dir / ENCODER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(out_dir / TOKENIZER_DIR))
    # contiguous fp32 copies: safetensors refuses shared or non-contiguous storage
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"version": info.version})
    if fp16_copy:
        half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
        save_file(half, str(out_dir / FP16_WEIGHTS_FILE), metadata={"version": info.version, "dtype": "float16"})


def fuse_transformer_graph(fp32_path: Path, encoder_config: dict[str, Any]) -> dict[str, int]:
    """Rewrite the fp32 graph in place with ONNX Runtime's transformer fusions (Attention, EmbedLayerNorm,
    SkipLayerNorm, BiasGelu); returns the fused-operator counts (empty when the graph is left as it was).

    Why: the exporter emits attention as a dozen small MatMul/Softmax/Reshape nodes; the fused ``Attention``
    op (quantized to ``QAttention`` below) does the same work in one kernel, which matters most on CPUs
    without VNNI where int8 MatMuls gain less (BENCHMARKS.md). BERT-family graphs only.
    """
    if encoder_config.get("model_type") != "bert":
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(fp32_path), model_type="bert", num_heads=int(encoder_config["num_attention_heads"]),
                               hidden_size=int(encoder_config["hidden_size"]), opt_level=1)
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    if stats.get("Attention", 0) < int(encoder_config.get("num_hidden_layers", 1)):
        return {}  # fusion did not match every layer: keep the plain graph rather than a half-fused one
    optimized.save_model_to_file(str(fp32_path))
    return stats


def ffn_down_projections(onnx_path: Path, intermediate_size: int, hidden_size: int) -> list[str]:
    """Names of the MatMuls that project the feed-forward block back down (weight ``intermediate x hidden``).

    Why these: their input is the GELU output, whose range is set by a few outlier neurons in trained encoders
    (mpnet most of all). Dynamic quantization scales each activation tensor by its largest value, so one
    outlier leaves the other neurons a handful of int8 levels. Found by the weight's shape, not by node names,
    so it holds for any BERT-like export.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and shapes.get(node.input[1]) == (intermediate_size, hidden_size)]


def export_onnx_int8(
    artifact_dir: Path,
    opset: int = 17,
    keep_fp32: bool = False,
    per_channel: bool = True,
    fuse: bool = True,
    fp32_ffn_down: bool | None = None,
    reduce_range: bool | None = None,
) -> Path:
    """Export the artifact's fp32 model to ONNX, quantize its weights to int8, return model.int8.onnx's path.

    Dynamic batch and sequence axes (the engine pads each micro-batch to its own longest text). MatMul/Gemm
    weights and the embedding tables (Gather) are quantized to QInt8 with onnxruntime's dynamic quantization,
    per output channel by default: side by side on 300 headlines, per channel halved the largest probability
    gap to torch fp32 compared with per tensor, at the same speed and size (~21 MB). With ``fuse`` the model
    is exported with eager attention (which ONNX Runtime's fusion recognises) and fused before quantization
    (``fuse_transformer_graph``); any fusion failure falls back to the plain graph.

    ``fp32_ffn_down`` keeps the feed-forward down projections in fp32 (``ffn_down_projections``); ``None``
    means "when the graph is not fused". Measured on an all-mpnet-base-v2 model trained 450 steps
    (unfused: ONNX Runtime's fusion is BERT-only; ``benchmarks/bench_int8_sensitivity.py``): int8 everywhere put
    its topic logits 45 % (relative L2) from fp32 and changed 35 % of topic argmaxes on 60 texts (dev topic
    accuracy 0.669 against fp32 0.745); quantizing one group of MatMuls at a time showed the down projections
    alone cause 41 % of it (every other group <= 11 %); keeping them fp32 leaves 10 % and dev 0.735, at x1.6-1.7
    the fp32 speed instead of x2.5-2.7 (BENCHMARKS.md, "The int8 teacher export"). The fused MiniLM graph
    keeps them int8: its int8 dev numbers reproduce its fp32 card.

    ``reduce_range`` quantizes weights to 7 bits (onnxruntime's ``reduce_range``); ``None`` means "when the graph is
    not fused", as for ``fp32_ffn_down``. Why: on x86 CPUs without VNNI (AVX2-only EPYCs) ONNX Runtime's u8s8
    kernel adds pairs of uint8 x int8 products in int16 (``vpmaddubsw``), which saturates when large activations
    meet large weights; 7-bit weights keep every pair below 2**15. The outlier fixture's int8 error on a Zen 3 was
    0.135 with 8-bit weights and 0.008-0.011 with 7-bit ones (tests/models/test_export.py); the fused MiniLM
    students' int8 dev numbers on that CPU match fp32 with 8-bit weights, so they keep the extra bit. The
    alternative, ONNX Runtime's ``session.x64quantprecision``, fixes it at load time instead but runs the slower
    u8u8 kernel on exactly those CPUs. Cost and effect measured in BENCHMARKS.md, "7-bit weights for unfused graphs".
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from models.torch_backend import load_torch_model

    artifact_dir = Path(artifact_dir)
    info = read_info(artifact_dir)
    model = load_torch_model(artifact_dir, info)
    if fuse and hasattr(model.encoder, "set_attn_implementation"):
        model.encoder.set_attn_implementation("eager")  # the SDPA export hides the pattern the fusion matches
    fp32_path, int8_path = artifact_dir / ONNX_FP32_FILE, artifact_dir / ONNX_INT8_FILE

    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 10:] = 0
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes.update({name: {0: "batch"} for name in OUTPUT_NAMES})
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracer/deprecation chatter of the TorchScript exporter; correctness is checked by tests instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(fp32_path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    encoder_config = json.loads((artifact_dir / ENCODER_CONFIG_FILE).read_text())
    fused: dict[str, int] = {}
    if fuse:
        try:
            fused = fuse_transformer_graph(fp32_path, encoder_config)
        except Exception:  # noqa: BLE001 - fusion is an optimisation; the plain graph is correct
            fused = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference + graph cleanup before quantization, as onnxruntime recommends (not on fused graphs:
        # their contrib ops are opaque to ONNX shape inference).
        prepared = Path(tmp) / "prepared.onnx"
        source = fp32_path
        if not fused:
            try:
                from onnxruntime.quantization.shape_inference import quant_pre_process

                quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
                source = prepared
            except Exception:  # pre-processing is an optimisation; quantize the raw export if it fails
                source = fp32_path
        keep_fp32_nodes: list[str] = []
        if (not fused) if fp32_ffn_down is None else fp32_ffn_down:
            keep_fp32_nodes = ffn_down_projections(
                source, int(encoder_config["intermediate_size"]), int(encoder_config["hidden_size"])
            )
        quantize_dynamic(
            str(source),
            str(int8_path),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=(not fused) if reduce_range is None else reduce_range,
            nodes_to_exclude=keep_fp32_nodes,
            # Gather: the 30k-token embedding table; Attention: the fused attention (-> QAttention)
            op_types_to_quantize=["MatMul", "Gemm", "Gather", "Attention", "EmbedLayerNormalization"],
            extra_options={"DefaultTensorType": 1},  # FLOAT, for outputs of contrib ops shape inference skips
        )
    if not keep_fp32:
        fp32_path.unlink(missing_ok=True)
    return int8_path


def slim_copy(artifact_dir: Path, out_dir: Path) -> Path:
    """Copy an artifact without its fp32 weights / fp32 ONNX (for the committed default model)."""
    artifact_dir, out_dir = Path(artifact_dir), Path(out_dir)
    if not (artifact_dir / ONNX_INT8_FILE).is_file():
        raise FileNotFoundError(f"{artifact_dir} has no {ONNX_INT8_FILE}: run export_onnx_int8 first")
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in artifact_dir.iterdir():
        if item.name in SLIM_EXCLUDE:
            continue
        target = out_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    return out_dir
