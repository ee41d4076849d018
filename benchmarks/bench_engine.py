"""Inference speed and memory bar of issue 2: the engine vs two naive torch fp32 baselines, in one run.

    python benchmarks/bench_engine.py [--data CSV] [--n 1000] [--model DIR] [--write]

On the same headlines (first ``--n`` rows of the tweet-topic train CSV; generated texts when absent):
  (a) per-text baseline: batch 1, padded to the model's max length, torch fp32 (a naive /classify endpoint);
  (b) naive batched baseline: batch 64, padded to max length, torch fp32;
  (c) the engine, ``load_engine(model)`` with backend/device ``auto`` (ONNX Runtime int8 on CPU), with
      ``--sessions`` concurrent sessions (default ``auto``, as served);
  (d) the same engine with one session and the graph as exported (no load-time rewrite, ``models.onnx_graph``):
      what the engine was before those two changes, so their gain is measured in the same run.
``--untrained`` benchmarks a fresh export of the base encoder by the current exporter (fused attention) with
the preprocessing new training runs use (``mm-text-v1``) instead of the bundled model: the compute of a model
that ``marketmood train`` produces today, except that it keeps the base tokenizer, without the ``[url]`` and cashtag
tokens training adds (``training/vocab.py``): ~15 % more tokens per tweet than a trained artifact.
The compute ceiling (``benchmarks/roofline.py``): each path's multiply-adds are counted from the encoder's shape
and the padded batches it ran, the GEMM rate of these cores is measured on the model's FFN shape, and the
report gives each path's share of that rate and the largest ratios any engine of this model could reach here.
Every timing includes tokenization (its own cost is reported separately). Peak RSS is measured in a fresh subprocess that loads the engine and
classifies the same texts (VmHWM, see models/memory.py). ``--write`` puts the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECTION = "## Inference engine"


def cpu_description() -> str:
    """CPU model and the SIMD flags that decide int8 speed (AVX2 / AVX-512 / VNNI), from /proc/cpuinfo."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model}, {os.cpu_count()} logical CPUs, SIMD flags: {' '.join(simd) or 'none found'}"


def recorded_command(script: str, argv: list[str]) -> str:
    """The command line as run, quoted (``shlex.join``) so that pasting it into a POSIX shell reruns it: argv
    joined with bare spaces turns ``--section "## x"`` into a shell comment and ``--note "a; b (c)"`` into two
    commands and a syntax error."""
    return shlex.join(["python", script, *argv])


DEFAULT_DATA = REPO.parent / "shared/data/twitter_financial_news_topic/train.csv"


def data_path(given: Path | None, parser: argparse.ArgumentParser) -> Path:
    """The texts to time: ``--data`` as given, which must exist (a mistyped path silently timed generated headlines
    of another length and was recorded as the stream's), or the tweet-topic train CSV, with generated headlines
    only when that default is absent (a checkout without ``../shared``)."""
    if given is None:
        return DEFAULT_DATA
    if not given.is_file():
        parser.error(f"--data {given}: no such file")
    return given


def load_texts(path: Path, n: int, column: str = "text") -> tuple[list[str], str]:
    """First ``n`` non-empty texts of ``column`` of a CSV (gzipped when it ends in .gz: the news streams), in
    file order, or generated headlines when the data is not there."""
    if path.is_file():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="", encoding="utf-8") as handle:
            rows = (row[column] for row in csv.DictReader(handle) if (row.get(column) or "").strip())
            texts = [text for _, text in zip(range(n), rows)]
        return texts, f"{path} (column {column})"
    subjects = ["Apple", "Fed", "Oil", "Tesla", "ECB", "Gold", "Treasuries", "Nvidia", "JPMorgan", "Bitcoin"]
    verbs = ["jumps", "slumps", "holds steady", "beats estimates", "misses forecasts", "cuts guidance"]
    tails = ["", " after earnings", " as investors weigh rate path", " amid recession fears in Europe and Asia"]
    texts = [f"{subjects[i % 10]} {verbs[i % 6]}{tails[i % 4]} ({i})" for i in range(n)]
    return texts, "generated headlines (data file absent)"


def make_artifact(tmp: Path, keep_fp32: bool = False) -> Path:
    """A real artifact from the base encoder with fresh heads (same compute as a trained one)."""
    import torch
    from transformers import AutoTokenizer

    from models.artifact import BUNDLED_MODEL_DIR, ArtifactInfo, read_info
    from models.export import export_onnx_int8, save_torch_artifact
    from models.network import build_from_pretrained, default_base_encoder
    from models.preprocess import DEFAULT_PREPROCESSING

    torch.manual_seed(0)
    base = default_base_encoder()
    model = build_from_pretrained(base, 3, 20).eval()
    out = tmp / "bench-untrained"
    # max_length as the bundled model's (64): at 128 the padded baselines did twice the work and the
    # engine/baseline ratios of this path were flattered
    max_length = read_info(BUNDLED_MODEL_DIR).max_length if (BUNDLED_MODEL_DIR / "artifact.json").is_file() else 64
    save_torch_artifact(model, AutoTokenizer.from_pretrained(str(base)), out,
                        ArtifactInfo("bench-untrained", str(base), max_length, preprocessing=DEFAULT_PREPROCESSING))
    export_onnx_int8(out, keep_fp32=keep_fp32)
    return out


def baseline_model(artifact: Path):
    """fp32 torch model of the artifact; a slim artifact (no fp32 weights) gets the same architecture."""
    from models.artifact import has_torch_weights, read_info
    from models.network import build_from_config
    from models.torch_backend import load_torch_model

    info = read_info(artifact)
    if has_torch_weights(artifact):
        return load_torch_model(artifact, info), True
    config = json.loads((artifact / "encoder_config.json").read_text())
    return build_from_config(config, len(info.labels["sentiment"]), len(info.labels["topic"])).eval(), False


def run_padded_baseline(model, encoder, texts: list[str], batch_size: int, width: int):
    """Naive path: fixed-size batches in input order, every text padded to ``width``."""
    import numpy as np
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            ids_list = encoder.encode(texts[start : start + batch_size])
            ids = np.zeros((len(ids_list), width), np.int64)
            mask = np.zeros_like(ids)
            for row, seq in enumerate(ids_list):
                ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
            sentiment, topic = model(torch.from_numpy(ids), torch.from_numpy(mask))
            outs.append((sentiment.numpy(), topic.numpy()))
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def measure_rss(artifact: Path, texts_file: Path) -> dict:
    """Peak RSS of a fresh process that loads the engine and classifies the texts."""
    code = (
        "import json, sys\n"
        "from models.engine import load_engine\n"
        "from models.memory import peak_rss_mb\n"
        f"texts = json.load(open({str(texts_file)!r}))\n"
        f"engine = load_engine({str(artifact)!r})\n"
        "after_load = peak_rss_mb()\n"
        "engine.classify(texts)\n"
        "print(json.dumps({'after_load_mb': after_load, 'peak_mb': peak_rss_mb(), 'torch_imported': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plain_agreement(engine, plain_engine, texts: list[str], request: int) -> str:
    """How far the load-time rewrite and the sessions move the served labels and probabilities (dynamic int8
    rounds activations per micro-batch, so the two engines' numbers are close, not equal)."""
    import numpy as np

    def proba(e):
        parts = [e.predict_proba(texts[i : i + request]) for i in range(0, len(texts), request)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    (s_new, t_new), (s_old, t_old) = proba(engine), proba(plain_engine)
    gap = np.maximum(np.abs(s_new - s_old).max(axis=1), np.abs(t_new - t_old).max(axis=1))
    return (f"label agreement sentiment {np.mean(s_new.argmax(1) == s_old.argmax(1)):.4f}, topic "
            f"{np.mean(t_new.argmax(1) == t_old.argmax(1)):.4f}; largest probability gap per text median "
            f"{np.median(gap):.4f}, max {gap.max():.4f}")


def compute_ceiling(artifact: Path, token_ids: list[list[int]], round_size: int, request: int, width: int,
                    described: dict, counts: dict[str, int], seconds: dict[str, float], threads: int) -> list[str]:
    """Report lines: each path's multiply-adds per text, its achieved GEMM rate, and the largest engine
    ratios this CPU allows for this model (``benchmarks/roofline.py``). Measured after the timed rounds."""
    from benchmarks.roofline import GEMM_ROWS, EncoderShape, batches_macs, engine_batches, gemm_ceiling

    from models.batching import unique_sequences

    shape = EncoderShape.from_config(json.loads((artifact / "encoder_config.json").read_text()))
    padded_per_text = shape.macs(1, width)
    lengths = [len(ids) for ids in token_ids]
    # the engine plans its micro-batches per classify call (each round's chunk cut into requests, as timed),
    # over that request's distinct texts
    distinct = [
        [len(ids) for ids in unique_sequences(token_ids[start + i : min(start + i + request, start + round_size)])[0]]
        for start in range(0, len(token_ids), round_size)
        for i in range(0, min(round_size, len(token_ids) - start), request)
    ]
    engine_work = sum(
        batches_macs(shape, engine_batches(request_lengths, described["batch_size"],
                                           described["max_batch_tokens"], described["max_padding"]))
        for request_lengths in distinct
    )
    repeated = 1 - sum(map(len, distinct)) / len(lengths)
    work = {"per_text": padded_per_text * counts["per_text"], "batched": padded_per_text * counts["batched"],
            "engine": engine_work}
    achieved = {k: work[k] / seconds[k] / 1e9 for k in work}
    gemm = gemm_ceiling(shape, threads)
    best_name, best = max(gemm.items(), key=lambda item: item[1])
    engine_per_text = engine_work / counts["engine"]
    # the least work any exact engine can do: every text at its own length, no padding at all
    least_per_text = sum(shape.macs(1, n) for n in lengths) / len(lengths)
    bound = best * 1e9 / least_per_text
    rates = {k: counts[k] / seconds[k] for k in counts}
    return [
        f"Compute ceiling (`benchmarks/roofline.py`): one {GEMM_ROWS} x {shape.hidden} x {shape.intermediate} GEMM on"
        f" {threads} threads runs at " + ", ".join(f"{name} {rate:.1f}" for name, rate in gemm.items()) + " GMAC/s."
        f" Matrix work per text: (a)/(b) padded to {width} tokens {padded_per_text / 1e6:.0f} MMAC, engine"
        f" {engine_per_text / 1e6:.0f} MMAC (x{padded_per_text / engine_per_text:.2f} less: length-sorted batches of"
        f" the preprocessed text, {100 * repeated:.1f}% of the texts repeat one of their request and are scored once;"
        f" {least_per_text / 1e6:.0f} MMAC for every text without any padding). Achieved: (a) {achieved['per_text']:.1f}, (b) {achieved['batched']:.1f},"
        f" (c) {achieved['engine']:.1f} GMAC/s = {100 * achieved['engine'] / best:.0f}% of the best GEMM rate"
        f" ({best_name}). An engine scoring every text with only its unpadded matrix work at 100% of that rate would reach"
        f" {bound:.0f} texts/s: **at most x{bound / rates['batched']:.2f} over (b) and x{bound / rates['per_text']:.2f}"
        f" over (a) on this CPU**, before any non-matrix work.",
    ]


def write_section(path: Path, body: str, section: str = SECTION) -> None:
    """Replace (or append) one section of BENCHMARKS.md (by its heading line), leaving other sections alone."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if section + "\n" in text:
        head, rest = text.split(section + "\n", 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + body + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def main() -> None:
    from models.artifact import BUNDLED_MODEL_DIR, read_info
    from models.devices import cpu_threads
    from models.preprocess import preprocess_all

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="CSV (or .csv.gz) of texts; default: tweet-topic train (generated headlines when absent)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--text-column", default="text", help="CSV column to score (the Reuters stream: headline)")
    parser.add_argument("--model", type=Path, default=None, help="artifact folder; default: bundled model")
    parser.add_argument("--threads", type=int, default=None, help="threads for all three; default: all cores")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each times all three paths)")
    parser.add_argument("--per-text-every", type=int, default=1, help="time (a) on every k-th text only (slow path)")
    parser.add_argument("--sessions", default="auto", help="engine: concurrent ONNX sessions (threads split), or auto")
    parser.add_argument("--batch-size", type=int, default=None, help="engine: micro-batch rows (default: engine's)")
    parser.add_argument("--request-size", type=int, default=None,
                        help="engine: texts per classify call (default: a whole round; 32 = a stream worker's batch)")
    parser.add_argument("--max-padding", default="auto", help="engine: auto | off | a fraction in [0, 1)")
    parser.add_argument("--untrained", action="store_true", help="benchmark a fresh export of the base encoder")
    parser.add_argument("--section", default=SECTION, help="BENCHMARKS.md section heading to write")
    parser.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    parser.add_argument("--note", default="", help="context line recorded with the results")
    args = parser.parse_args()
    data = data_path(args.data, parser)

    import numpy as np
    import torch

    from models.engine import load_engine
    from models.memory import peak_rss_mb
    from models.text_encoder import TextEncoder

    threads = cpu_threads(args.threads)
    torch.set_num_threads(threads)
    texts, source = load_texts(data, args.n, args.text_column)
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    if args.model is not None:
        artifact = args.model
    elif (BUNDLED_MODEL_DIR / "artifact.json").is_file() and not args.untrained:
        artifact = BUNDLED_MODEL_DIR
    else:
        artifact = make_artifact(tmp)
    info = read_info(artifact)
    load_before = os.getloadavg()[0]

    max_padding = args.max_padding if args.max_padding in ("auto", "off") else float(args.max_padding)
    sessions = args.sessions if args.sessions == "auto" else int(args.sessions)
    engine = load_engine(artifact, threads=threads, sessions=sessions, batch_size=args.batch_size,
                         max_padding=max_padding)
    plain_engine = load_engine(artifact, threads=threads, sessions=1, rewrite_graph=False,
                               batch_size=args.batch_size, max_padding=max_padding)
    width = engine.max_length
    model, same_weights = baseline_model(artifact)
    encoder = TextEncoder(artifact / "tokenizer", width)
    token_ids = encoder.encode(preprocess_all(texts, info.preprocessing))
    lengths = [len(ids) for ids in token_ids]
    tokenize_s = float("inf")
    for _ in range(3):  # steady state, like the timed paths (the first call also warms the tokenizer up)
        t0 = time.perf_counter()
        engine.preprocess(texts)
        tokenize_s = min(tokenize_s, time.perf_counter() - t0)

    # warm-up, so no path pays first-call allocation inside its timing
    # The baselines read the text the model was trained on: the artifact's preprocessing (identity for the
    # bundled model), applied inside their timings as the engine applies it inside its own.
    def baseline(chunk: list[str], batch_size: int):
        return run_padded_baseline(model, encoder, preprocess_all(chunk, info.preprocessing), batch_size, width)

    baseline(texts[:8], 8)
    engine.classify(texts[:8])
    plain_engine.classify(texts[:8])

    # Interleaved rounds: each round times all three paths on the same slice of texts, rotating their order,
    # so a burst of load from other processes hits every path alike and the ratios stay meaningful.
    paths = {
        "per_text": lambda chunk: baseline(chunk[:: args.per_text_every], 1),
        "batched": lambda chunk: baseline(chunk, 64),
        "engine": lambda chunk: [engine.classify(chunk[i : i + request]) for i in range(0, len(chunk), request)],
        "plain": lambda chunk: [plain_engine.classify(chunk[i : i + request]) for i in range(0, len(chunk), request)],
    }
    seconds = dict.fromkeys(paths, 0.0)
    counts = dict.fromkeys(paths, 0)
    size = -(-len(texts) // args.rounds)
    request = args.request_size or size
    for r, start in enumerate(range(0, len(texts), size)):
        chunk = texts[start : start + size]
        names = list(paths)[r % len(paths) :] + list(paths)[: r % len(paths)]
        for name in names:
            t0 = time.perf_counter()
            paths[name](chunk)
            seconds[name] += time.perf_counter() - t0
            counts[name] += len(chunk[:: args.per_text_every]) if name == "per_text" else len(chunk)
    per_text, batched, eng, plain = (counts[k] / seconds[k] for k in ("per_text", "batched", "engine", "plain"))
    load_after = os.getloadavg()[0]
    bench_rss = peak_rss_mb()
    d = engine.describe()
    ceiling_lines = compute_ceiling(artifact, token_ids, size, request, width, d, counts, seconds, threads)

    texts_file = tmp / "texts.json"
    texts_file.write_text(json.dumps(texts))
    rss = measure_rss(artifact, texts_file)

    agreement = "n/a (slim artifact: baselines use the same architecture with random weights)"
    if same_weights:
        b_sent, b_topic = baseline(texts, 64)
        e_sent, e_topic = engine.predict_logits(texts)
        agreement = (
            f"argmax agreement engine vs fp32 batched: sentiment {np.mean(e_sent.argmax(1) == b_sent.argmax(1)):.3f}, "
            f"topic {np.mean(e_topic.argmax(1) == b_topic.argmax(1)):.3f}"
        )
    rows = [
        (f"(a) per-text: batch 1, padded to max length, torch fp32 ({counts['per_text']} texts)", per_text),
        ("(b) naive batched: batch 64, padded to max length, torch fp32", batched),
        (f"(c) engine: {d['backend']} {d['precision']} on {d['device']}, length-sorted batches of <= {d['batch_size']}"
         f" (padding <= {d['max_padding'] if d['max_padding'] is not None else 'any'}), {d['sessions']} session(s),"
         f" requests of {request} texts", eng),
        ("(d) engine, 1 session, graph as exported (before the load-time rewrite and auto sessions)", plain),
    ]
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = recorded_command("benchmarks/bench_engine.py", sys.argv[1:])
    lines = [
        args.section,
        "",
        f"Command: `{command}` — {date}, {platform.node()}, {threads} threads, Python {platform.python_version()}.",
        f"CPU: {cpu_description()}.",
        f"Texts: {len(texts)} from {source} (tokens incl. [CLS]/[SEP]: mean {np.mean(lengths):.1f}, max {max(lengths)};"
        f" baselines pad to max_length = {width}).",
        f"Model: `{artifact.name}` version `{info.version}`. Timings include tokenization; after a warm-up the paths"
        f" ran side by side in {args.rounds} interleaved rounds (rotating order) over the same texts.",
        f"1-minute load average before/after: {load_before:.2f} / {load_after:.2f}"
        + (f" — {args.note}" if args.note else ""),
        "",
        "| path | texts/s | engine speed-up |",
        "|---|---:|---:|",
        *[f"| {name} | {rate:.1f} | x{eng / rate:.2f} |" for name, rate in rows],
        "",
        f"Targets: engine/(b) >= 3 -> **x{eng / batched:.2f}** ({'met' if eng / batched >= 3 else 'NOT met'}); "
        f"engine/(a) >= 8 -> **x{eng / per_text:.2f}** ({'met' if eng / per_text >= 8 else 'NOT met'}).",
        "",
        f"Peak RSS of a fresh process holding the loaded engine (VmHWM): {rss['after_load_mb']:.0f} MiB after load, "
        f"{rss['peak_mb']:.0f} MiB after classifying the {len(texts)} texts (bar: <= 1024 MiB; torch imported: "
        f"{rss['torch_imported']}). For contrast, this benchmark process (torch baselines + engine): {bench_rss:.0f} MiB.",
        "",
        f"Accuracy check: {agreement}.",
        "",
        f"Engine (c) vs (d), same texts in the same requests: {plain_agreement(engine, plain_engine, texts, request)}.",
        "",
        *ceiling_lines,
        "",
        f"Tokenizer cost (engine preprocess = validation + `{d['preprocessing']}` + Rust tokenizer): {tokenize_s:.3f} s for"
        f" {len(texts)} texts, {100 * tokenize_s * eng / len(texts):.0f}% of the engine's time.",
        "",
    ]
    if max(load_before, load_after) > threads:
        lines[-1:-1] = [
            f"Caveat: the load average exceeded the {threads} cores, so absolute texts/s are far below an idle"
            " machine (FACTS.md, idle: ~100 texts/s fp32 batched, 350-480 ORT int8); only the side-by-side ratios"
            " count, and the per-text ratio is inflated because batch-1 torch calls suffer most from oversubscribed"
            " threads. Re-run on an idle machine for absolute numbers.",
            "",
        ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", body, args.section)
        print(f"written to {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
