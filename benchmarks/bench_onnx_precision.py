"""fp32 vs int8 ONNX graphs of the same fresh export, side by side: is int8 worth it on this CPU?

    python benchmarks/bench_onnx_precision.py [--n 600] [--rounds 4] [--threads 2]

Why: on CPUs without VNNI, int8 matrix products go through vpmaddubsw/vpmaddwd and the fp32 graph with fused
attention could be as fast; this measures both graphs of one export (the base encoder with fresh heads, fused
as the exporter does, ``keep_fp32``) on the same length-sorted micro-batches of <= 64 texts, in interleaved
rounds, ONNX Runtime only (no tokenizer, no post-processing: the engine adds the same cost to both).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_engine  # noqa: E402 - the same texts and fresh artifact as the engine benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="CSV of texts to score; default: tweet-topic train (generated headlines when absent)")
    ap.add_argument("--n", type=int, default=600, help="texts")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (alternating order)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = ap.parse_args()
    data = bench_engine.data_path(args.data, ap)

    from models.artifact import read_info
    from models.batching import pad_batch, plan_batches
    from models.onnx_backend import OnnxRunner
    from models.text_encoder import TextEncoder

    texts, source = bench_engine.load_texts(data, args.n)
    artifact = bench_engine.make_artifact(Path(tempfile.mkdtemp(prefix="bench-precision-")), keep_fp32=True)
    encoder = TextEncoder(artifact / "tokenizer", read_info(artifact).max_length)
    token_ids = encoder.encode(texts)
    # the engine's own length-sorted micro-batches, each padded to its longest text
    batches = [pad_batch([token_ids[i] for i in rows], encoder.pad_id)
               for rows in plan_batches([len(t) for t in token_ids], 64)]
    runners = {"int8": OnnxRunner(artifact / "model.int8.onnx", args.threads),
               "fp32": OnnxRunner(artifact / "model.onnx", args.threads)}
    for runner in runners.values():
        runner(*batches[0])  # warm-up
    seconds = dict.fromkeys(runners, 0.0)
    for r in range(args.rounds):
        for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
            t0 = time.perf_counter()
            for batch in batches:
                runners[name](*batch)
            seconds[name] += time.perf_counter() - t0
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {args.threads} threads; "
          f"{len(texts)} texts from {source}; 1-minute load {os.getloadavg()[0]:.2f}")
    rates = {name: args.rounds * len(texts) / s for name, s in seconds.items()}
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} texts/s (ONNX Runtime only)")
    print(f"int8 / fp32: x{rates['int8'] / rates['fp32']:.2f}")


if __name__ == "__main__":
    main()
