"""Where the CPU engine's time goes: ONNX Runtime's per-operator profile on worker-sized requests.

    python benchmarks/profile_engine.py [--model DIR] [--n 600] [--request-size 32] [--threads 1] [--as-exported]
    python benchmarks/profile_engine.py --compare-sessions [--threads 2] [--request-size 32]

Tokenizes the first ``--n`` tweet-topic train texts with the engine, plans micro-batches exactly as
``Engine.forward`` does for requests of ``--request-size`` texts (distinct texts, length-sorted, padding capped),
then runs them through one ONNX Runtime session with profiling on and sums kernel time per operator type.
``--as-exported`` profiles the graph as exported (no ``models.onnx_graph`` rewrite), for comparison.
``--compare-sessions`` instead times the same micro-batches through ``OnnxRunner.run_many`` with one session of
``--threads`` threads and with ``--threads`` single-thread sessions, interleaved (best of 5 rounds each): the
sessions' own gain, without tokenization or the rest of the engine.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def compare_sessions(model_path: Path, batches: list, threads: int, n_texts: int, rewrite: bool) -> None:
    from models.onnx_backend import OnnxRunner

    runners = {f"1 session x {threads} threads": OnnxRunner(model_path, threads, sessions=1, rewrite=rewrite),
               f"{threads} sessions x 1 thread": OnnxRunner(model_path, threads, sessions=threads, rewrite=rewrite)}
    best = dict.fromkeys(runners, 0.0)
    for runner in runners.values():
        runner.run_many(batches[:8])  # warm-up
    for _ in range(5):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.run_many(batches)
            best[name] = max(best[name], n_texts / (time.perf_counter() - t0))
    (a, rate_a), (b, rate_b) = best.items()
    print(f"{len(batches)} micro-batches of {n_texts} texts: {a} {rate_a:.0f} texts/s, {b} {rate_b:.0f} texts/s "
          f"(x{rate_b / rate_a:.2f}); graph {'rewritten' if rewrite else 'as exported'}")


def main() -> None:
    import onnxruntime as ort

    from models.artifact import BUNDLED_MODEL_DIR, ONNX_INT8_FILE
    from models.batching import pad_batch, plan_batches, unique_sequences
    from models.engine import load_engine
    from models.onnx_backend import load_graph, session_options

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL_DIR)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/twitter_financial_news_topic/train.csv")
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--request-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the profiled session")
    parser.add_argument("--as-exported", action="store_true", help="skip the load-time graph rewrite")
    parser.add_argument("--compare-sessions", action="store_true", help="time 1 session vs --threads sessions")
    args = parser.parse_args()

    engine = load_engine(args.model, device="cpu", backend="onnx", threads=1, sessions=1)
    with open(args.data, newline="", encoding="utf-8") as handle:
        texts = [row["text"] for _, row in zip(range(args.n), csv.DictReader(handle))]
    token_ids = engine.preprocess(texts)
    batches = []
    for start in range(0, len(token_ids), args.request_size):
        distinct, _ = unique_sequences(token_ids[start : start + args.request_size])
        for indices in plan_batches([len(t) for t in distinct], engine.batch_size, engine.max_batch_tokens,
                                    engine.max_padding):
            batches.append(pad_batch([distinct[i] for i in indices], engine.encoder.pad_id))

    if args.compare_sessions:
        compare_sessions(args.model / ONNX_INT8_FILE, batches, args.threads, len(texts), not args.as_exported)
        return
    graph, disabled, rewritten = load_graph(args.model / ONNX_INT8_FILE, rewrite=not args.as_exported)
    options = session_options(args.threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="mm-profile-")) / "ort")
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    feeds = [{"input_ids": ids, "attention_mask": mask} for ids, mask in batches]
    for feed in feeds[:5]:  # warm-up (its kernels are in the profile too, a few percent of the total)
        session.run(None, feed)
    t0 = time.perf_counter()
    for feed in feeds:
        session.run(None, feed)
    elapsed = time.perf_counter() - t0
    events = json.loads(Path(session.end_profiling()).read_text())

    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    rows = sum(ids.shape[0] for ids, _ in batches)
    width = sum(ids.shape[0] * ids.shape[1] for ids, _ in batches) / max(rows, 1)
    print(f"model {args.model.name}, onnxruntime {ort.__version__}, {args.threads} thread(s), graph "
          f"{'as exported' if args.as_exported else f'rewritten ({rewritten} nodes)'}")
    print(f"{len(texts)} texts in requests of {args.request_size}: {len(batches)} micro-batches, "
          f"{rows / len(batches):.1f} rows of {width:.1f} tokens on average; session alone {len(texts) / elapsed:.0f} texts/s")
    print("| operator | ms | share |\n|---|---:|---:|")
    for op, micros in per_op.most_common():
        if micros / total >= 0.005:
            print(f"| {op} | {micros / 1e3:.1f} | {100 * micros / total:.1f}% |")


if __name__ == "__main__":
    main()
