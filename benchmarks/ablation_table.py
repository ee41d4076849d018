"""Side-by-side dev results of several trained artifacts (the ablation table in BENCHMARKS.md).

Reads each artifact's ``metrics.json`` (written by ``marketmood train``: dev metrics with bootstrap 95%
intervals for the fp32 and CPU int8 paths) and its ``training_config.json`` (what was trained: teacher,
unlabeled texts, epochs chosen), and prints one markdown table. Artifacts trained with the same seed and
data share their dev splits (the card's fingerprints say so; the script refuses to mix splits): it compares
the dev sizes and what carves the splits (config ``seed``, ``split_method``, ``select_fraction``,
``limit_per_dataset``, the fingerprints of the labeled files, and ``exclude_texts`` / ``extra_examples``,
which the record keeps as counts) and stops on any difference.

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


SPLIT_SETTINGS = ("seed", "split_method", "select_fraction", "limit_per_dataset", "exclude_texts", "extra_examples")


def labeled_fingerprints(record: dict) -> dict[str, str]:
    """Fingerprints of the labeled files the splits are carved from (the .gz news streams are transfer texts)."""
    return {name: fp for name, fp in (record.get("data_fingerprints") or {}).items()
            if name.endswith(".csv") and not name.startswith("unlabeled")}


def split_identity(record: dict, metrics: dict, path: str = "cpu_int8") -> dict:
    """What decides a run's dev rows: equal for two runs means their dev numbers are on the same rows."""
    cfg = record.get("config") or record
    return {
        "dev_sizes": record.get("dev_sizes") or {k: v.get(path, {}).get("n") for k, v in metrics["dev"].items()},
        **{key: cfg.get(key) for key in SPLIT_SETTINGS},
        "split_method_used": record.get("split_method", cfg.get("split_method")),
        "labeled_fingerprints": labeled_fingerprints(record),
    }


def split_differences(identities: dict[str, dict]) -> list[str]:
    """One line per field on which the runs' split identities differ (empty: comparable)."""
    names = list(identities)
    out = []
    for key in identities[names[0]]:
        values = {name: identities[name].get(key) for name in names}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            out.append(f"{key}: " + "; ".join(f"{name}={json.dumps(v, sort_keys=True)}" for name, v in values.items()))
    return out


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
        splits[name] = split_identity(record, metrics, args.path)
        rows.append((name, metrics, record))
    differences = split_differences(splits)
    if differences:
        raise SystemExit("different dev splits, not comparable:\n  " + "\n  ".join(differences))
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
