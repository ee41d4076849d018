"""Which MatMuls does int8 hurt? Quantize one group at a time and compare each graph with the fp32 one.

    python benchmarks/bench_int8_sensitivity.py --model ARTIFACT_DIR      # a trained artifact with model.safetensors
    python benchmarks/bench_int8_sensitivity.py --base-encoder DIR        # a base encoder with fresh (seeded) heads

Why: the int8 export of the mpnet teachers was far from their fp32 weights while MiniLM's was not. This finds
the cause on any encoder: the fp32 graph (unfused, so every projection is a separate MatMul) is quantized
with the exporter's settings but only for one group of MatMuls (the same projection in every layer, named
with the layer index removed), then the exporter's own int8 graph as shipped and with every MatMul int8
(``fp32_ffn_down=False``, the export before the fix), and the shipped export with 8-bit and with 7-bit
weights (``reduce_range``: what it costs on this CPU; without VNNI it is what avoids int16 saturation). Per row:
relative L2 distance of each head's logits from fp32, share of argmax decisions kept, time per pass over the
texts and file size. Texts: the first ``--n/2`` of PhraseBank's validation file and of the tweet-topic train
file, encoded as the artifact's engine does.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def load_texts(data: Path, n: int) -> list[str]:
    texts: list[str] = []
    for name in ("financial_phrasebank/valid.csv", "twitter_financial_news_topic/train.csv"):
        with open(data / name, newline="", encoding="utf-8") as fh:
            texts += [row["text"] for _, row in zip(range(n // 2), csv.DictReader(fh))]
    return texts


def fresh_artifact(base_encoder: Path, out: Path) -> Path:
    """The base encoder with seeded fresh heads, written as a torch artifact (no export)."""
    import torch
    from transformers import AutoTokenizer

    from models.artifact import ArtifactInfo
    from models.export import save_torch_artifact
    from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
    from models.network import build_from_pretrained

    torch.manual_seed(1234)
    model = build_from_pretrained(base_encoder, len(SENTIMENT_LABELS), len(TOPIC_LABELS)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(base_encoder), local_files_only=True)
    info = ArtifactInfo(version="fresh-heads", base_encoder=str(base_encoder), max_length=64, created_at="bench")
    save_torch_artifact(model, tokenizer, out, info)
    return out


def torch_copy(artifact: Path, out: Path) -> Path:
    """The artifact's torch files only, so exporting never touches the original's ONNX graphs."""
    out.mkdir(parents=True)
    for item in artifact.iterdir():
        if item.is_dir() and item.name == "tokenizer":
            shutil.copytree(item, out / item.name)
        elif item.is_file() and item.suffix != ".onnx":
            shutil.copy2(item, out / item.name)
    return out


def torch_logits(artifact: Path, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The artifact's fp32 torch model on the same padded batch: separates export error from quantization error."""
    import torch

    from models.artifact import read_info
    from models.torch_backend import load_torch_model

    model = load_torch_model(artifact, read_info(artifact)).eval()
    with torch.inference_mode():
        return [t.numpy() for t in model(torch.from_numpy(ids), torch.from_numpy(mask))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="trained artifact folder (needs model.safetensors)")
    source.add_argument("--base-encoder", type=Path, help="HF encoder folder; fresh seeded heads")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data", help="labeled datasets folder")
    ap.add_argument("--n", type=int, default=60, help="texts (half PhraseBank, half tweet topics)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from models.artifact import ONNX_FP32_FILE, ONNX_INT8_FILE, read_info
    from models.batching import pad_batch
    from models.export import export_onnx_int8
    from models.onnx_backend import OnnxRunner
    from models.text_encoder import TextEncoder

    work = Path(tempfile.mkdtemp(prefix="bench-int8-sensitivity-"))
    artifact = fresh_artifact(args.base_encoder, work / "src") if args.base_encoder else args.model
    info = read_info(artifact)
    encoder = TextEncoder(artifact / "tokenizer", min(info.max_length, 64), info.preprocessing)
    ids, mask = pad_batch(encoder.encode(load_texts(args.data, args.n)), encoder.pad_id)

    def score(path: Path) -> tuple[list[np.ndarray], float]:
        runner = OnnxRunner(path, args.threads)
        runner(ids, mask)  # warm-up
        started = time.perf_counter()
        logits = runner(ids, mask)
        return list(logits), time.perf_counter() - started

    graphs: dict[str, Path] = {}
    unfused = export_onnx_int8(torch_copy(artifact, work / "unfused"), keep_fp32=True, fuse=False).parent
    reference, fp32_seconds = score(unfused / ONNX_FP32_FILE)
    export_error = max(np.linalg.norm(a - b) / np.linalg.norm(a)
                       for a, b in zip(torch_logits(artifact, ids, mask), reference))
    for name, kwargs in (("export as shipped", {}),
                         ("export as shipped, 8-bit weights (reduce_range off)", {"reduce_range": False}),
                         ("export as shipped, 7-bit weights (reduce_range on)", {"reduce_range": True}),
                         ("every MatMul int8 (before the fix)", {"fp32_ffn_down": False, "reduce_range": False})):
        graphs[name] = export_onnx_int8(torch_copy(artifact, work / f"export-{len(graphs)}"), **kwargs)
    prepared = work / "prepared.onnx"
    quant_pre_process(str(unfused / ONNX_FP32_FILE), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared)).graph
    weights = {init.name for init in graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            groups.setdefault(re.sub(r"layer\.\d+", "layer.*", node.name), []).append(node.name)
    for group, nodes in groups.items():
        path = work / f"group-{len(graphs)}.onnx"
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=nodes,
                         extra_options={"DefaultTensorType": 1})
        graphs[f"only {group} ({len(nodes)})"] = path

    print(f"{artifact} ({info.version}), {len(ids)} texts, fp32 ONNX {fp32_seconds * 1000:.0f} ms a pass, "
          f"largest relative L2 distance of its logits from torch fp32 {export_error:.1e} (the export itself)")
    print(f"{'int8 graph':<62} {'sentiment rel / kept':>21} {'topic rel / kept':>17} {'ms':>6} {'MB':>6}")
    for name, path in graphs.items():
        logits, seconds = score(path)
        cells = [f"{np.linalg.norm(a - b) / np.linalg.norm(a):.3f} / {(a.argmax(1) == b.argmax(1)).mean():.2f}"
                 for a, b in zip(reference, logits)]
        print(f"{name:<62} {cells[0]:>21} {cells[1]:>17} {seconds * 1000:6.0f} {path.stat().st_size / 1e6:6.1f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
