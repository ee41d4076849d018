"""LoRA vs full fine-tuning on a feedback-sized retrain: wall time, peak RSS, dev quality (issue 12).

    python benchmarks/bench_lora.py [--limit 300] [--epochs 1] [--threads 2] [--write]

Each variant trains in its own fresh process (so peak RSS is its own) on the same data: at most ``--limit``
rows per labeled set of ``../shared/data`` (a retrain-sized job), the same seed, selection split and dev
splits; LoRA uses its own learning rate (adapters need a larger one). Dev numbers are the fp32 path of the
artifact's metrics.json with bootstrap 95% intervals. ``--write`` records the table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SECTION = "## LoRA vs full fine-tuning (retrain-sized)"

CHILD = """
import json, sys, time
from pathlib import Path
from models.memory import peak_rss_mb
from training.config import TrainConfig
from training.trainer import train
spec = json.loads(sys.argv[1])
t0 = time.perf_counter()
out = train(TrainConfig(**spec), progress=False)
elapsed = time.perf_counter() - t0
record = json.loads((out / "training_config.json").read_text())
print(json.dumps({"seconds": elapsed, "peak_rss_mb": peak_rss_mb(), "lora": record.get("lora"),
                  "train_epoch_s": record["history"]["epochs"][-1]["elapsed_s"],
                  "dev": json.loads((out / "metrics.json").read_text())["dev"]}))
"""


def main() -> None:
    from bench_engine import cpu_description, recorded_command, write_section

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--limit", type=int, default=300, help="rows per labeled set (train, select and dev)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=8e-5, help="full fine-tune learning rate")
    parser.add_argument("--lora-lr", type=float, default=5e-4, help="LoRA learning rate")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    base = {"data_path": str(args.data), "epochs": args.epochs, "limit_per_dataset": args.limit, "threads": args.threads,
            "export_onnx": False, "batch_size": 32, "max_length": 64, "patience": 0, "calibrate": False}
    variants = {"full fine-tune": {"lr": args.lr}, f"LoRA r={args.lora_r}": {"lora": True, "lora_r": args.lora_r,
                                                                          "lora_alpha": 2 * args.lora_r, "lr": args.lora_lr}}
    results = {}
    for name, extra in variants.items():
        spec = {**base, **extra, "output_dir": str(tmp / name.split()[0]), "version": f"bench-{name.split()[0].lower()}"}
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "dev"}), flush=True)

    sets = list(next(iter(results.values()))["dev"])
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [SECTION, "", f"Command: `{recorded_command('benchmarks/bench_lora.py', sys.argv[1:])}` — {date}; CPU: {cpu_description()};"
             f" 1-minute load average at the end {os.getloadavg()[0]:.2f} (shared machine: compare the rows, not absolute times).",
             f"Data: at most {args.limit} rows per set (train/select/dev), {args.epochs} epoch(s), seed 13, max_length 64, batch 32;"
             f" full lr {args.lr}, LoRA lr {args.lora_lr} (alpha 2r, targets: attention + dense layers; heads trained in full).",
             "", "| variant | trainable params | wall s (whole run) | peak RSS MiB | " + " | ".join(f"{s} acc [95% CI]" for s in sets) + " |",
             "|---|---:|---:|---:|" + "---|" * len(sets)]
    for name, r in results.items():
        trainable = f"{r['lora']['trainable'] / 1e6:.2f}M / {r['lora']['total'] / 1e6:.1f}M" if r.get("lora") else "all"
        cells = []
        for s in sets:
            m = r["dev"][s]["fp32"]
            cells.append(f"{m['accuracy']:.3f} [{m['ci95']['accuracy'][0]:.3f}, {m['ci95']['accuracy'][1]:.3f}]")
        lines.append(f"| {name} | {trainable} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | " + " | ".join(cells) + " |")
    body = "\n".join(lines) + "\n"
    print(body)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", body, SECTION)


if __name__ == "__main__":
    main()
