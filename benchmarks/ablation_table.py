"""Side-by-side dev results of several trained artifacts (the ablation table in BENCHMARKS.md).

Reads each artifact's ``metrics.json`` (written by ``marketmood train``: dev metrics with bootstrap 95%
intervals for the fp32 and CPU int8 paths) and its ``training_config.json`` (what was trained: teacher,
unlabeled texts, epochs chosen), and prints one markdown table. Artifacts trained with the same seed and
data share their dev splits (the card's fingerprints say so; the script refuses to mix splits).

    python benchmarks/ablation_table.py NAME=ARTIFACT_DIR [NAME=ARTIFACT_DIR ...] [--path cpu_int8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cell(result: dict, key: str) -> str:
    ci = (result.get("ci95") or {}).get(key)
    return f"{result[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{result[key]:.3f}"


def describe(record: dict) -> str:
    """What distinguishes a run: teacher, transfer texts, heads distilled, epochs."""
    cfg = record.get("config") or record
    distill = record.get("distillation") or {}
    parts = [f"best epoch {record.get('best_epoch', '?')} of {cfg.get('epochs', '?')}"]
    if distill:
        parts.append(f"KD alpha {distill.get('alpha')} T {distill.get('temperature')} on "
                     f"{'+'.join(distill.get('heads', ['sentiment', 'topic']))}, "
                     f"{distill.get('transfer_texts', 0)} unlabeled texts")
    else:
        parts.append("gold labels only")
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="NAME=DIR", help="artifact folders to compare")
    ap.add_argument("--path", default="cpu_int8", choices=["cpu_int8", "fp32"], help="serving path to report")
    args = ap.parse_args()
    rows, splits = [], {}
    for item in args.runs:
        name, _, folder = item.partition("=")
        folder = Path(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        record = json.loads((folder / "training_config.json").read_text())
        splits[name] = json.dumps(record.get("dev_sizes") or {k: v.get(args.path, {}).get("n")
                                                            for k, v in metrics["dev"].items()}, sort_keys=True)
        rows.append((name, metrics, record))
    if len(set(splits.values())) > 1:
        raise SystemExit(f"different dev splits, not comparable: {splits}")
    sets = list(rows[0][1]["dev"])
    header = "| run | what | " + " | ".join(f"{s} acc | {s} macro-F1" for s in sets) + " |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(sets)))
    for name, metrics, record in rows:
        cells = []
        for s in sets:
            result = metrics["dev"][s].get(args.path) or {}
            cells += [_cell(result, "accuracy"), _cell(result, "macro_f1")] if result else ["-", "-"]
        print(f"| {name} | {describe(record)} | " + " | ".join(cells) + " |")
    n = {s: rows[0][1]["dev"][s].get(args.path, {}).get("n") for s in sets}
    print(f"\n{args.path} path; dev sizes {n}; bootstrap 95% intervals from each card.")


if __name__ == "__main__":
    main()
