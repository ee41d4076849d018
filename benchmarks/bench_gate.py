"""Promotion gate error rates: by simulation at the shipped dev sizes, and on a real pair of artifacts.

Simulation (``training.gate_sim``): the challenger changes ``churn`` of the champion's dev predictions
(equal quality in expectation); "worse" also loses ``--drop`` macro-F1 on every base set. Printed per churn:
false-reject rate (equal challenger rejected) and false-accept rate (worse challenger accepted), from
``--reps`` seeded replications, with the gate's shipped settings (``GateConfig`` defaults).

Real pair (``--pair CHAMPION_DIR CHALLENGER_DIR``): both artifacts scored on the champion's dev split
(``--data``; the seed, split method and row limit its training_config.json records, as the retrain's gate reads
them, unless ``--seed`` / ``--split-method`` name others) on the CPU serving path, then the real gate; prints the
verdict, per-set differences with intervals and the disagreement rate.
With ``--unseen`` the rows are instead every labeled row that *neither* artifact trained or chose on (rebuilt
from both training records, ``training.heldout``): the only fair rows for two artifacts trained on different
splits (an older ``exact`` split and a ``cluster`` run, say), at the price of fewer rows.
Guard slices (``training.gate``): like ``marketmood retrain``, the real gate also judges the default guard slices
under ``--data`` (PhraseBank's all-agree rows, ``financial_phrasebank/valid.csv agreement=100``): a challenger whose
paired macro-F1 interval there lies wholly below 0 is rejected. ``--slice LABELS_CSV COLUMN=VALUE`` (repeatable)
names the guard slices instead; ``--no-guards`` judges without any (the verdicts this script printed before guard
slices existed, 2026-12-07).

    nice -n 10 python benchmarks/bench_gate.py --reps 400
    nice -n 10 python benchmarks/bench_gate.py --pair models/default_model RUN_DIR --data ../shared/data
    nice -n 10 python benchmarks/bench_gate.py --pair models/default_model RUN_DIR --unseen \
        --slice ../shared/data/financial_phrasebank/valid.csv agreement=100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training.datasets import DatasetError
from training.gate import GateConfig, evaluate_gate
from training.gate_sim import GUARD_SETS, SHIPPED_SETS, simulate_gate, simulate_guard


def simulate(args: argparse.Namespace) -> None:
    config = GateConfig(bootstrap_samples=args.bootstrap)
    if not args.guard_only:
        simulate_base_sets(args, config)
    simulate_guard_slices(args, config)


def simulate_base_sets(args: argparse.Namespace, config: GateConfig) -> None:
    sizes = ", ".join(f"{k} {sum(c)}" for k, (c, _) in SHIPPED_SETS.items())
    print(f"shipped dev sets: {sizes} (fiqa < min_examples {config.min_examples}: no vote)")
    print(f"gate: delta {config.delta} pooled, set_delta {config.set_delta}, {config.confidence:.0%} paired bootstrap "
          f"x{config.bootstrap_samples}, class_delta {config.class_delta}; {args.reps} replications, drop {args.drop}")
    print(f"{'churn':>6} {'false reject':>13} {'  (pooled)':>10} {'false accept':>13} {'s':>6}")
    for churn in args.churn:
        started = time.perf_counter()
        equal = simulate_gate(SHIPPED_SETS, config, churn=churn, drop=0.0, replications=args.reps, seed=11)
        worse = simulate_gate(SHIPPED_SETS, config, churn=churn, drop=args.drop, replications=args.reps, seed=12)
        print(f"{churn:>6.0%} {equal.reject_rate:>13.1%} {equal.pooled_reject:>10.1%} "
              f"{1 - worse.reject_rate:>13.1%} {time.perf_counter() - started:>6.1f}", flush=True)


def simulate_guard_slices(args: argparse.Namespace, config: GateConfig) -> None:
    for name, (counts, accuracy) in GUARD_SETS.items():
        print(f"guard slice {name}: {sum(counts)} rows, accuracy {accuracy}; votes on the upper bound "
              f"(>= -{config.guard_delta}); drops of {', '.join(f'{d:.2f}' for d in args.guard_drop)} macro-F1")
        print(f"{'churn':>6} {'false reject':>13} " + " ".join(f"{'caught -' + format(d, '.2f'):>13}" for d in args.guard_drop))
        for churn in args.churn:
            if churn / 2 > 1 - accuracy:  # fewer champion errors than the churn would fix: not an equal challenger
                print(f"{churn:>6.0%}  n/a: churn/2 > the champion's error rate {1 - accuracy:.3f}")
                continue
            equal = simulate_guard(counts, accuracy, config, churn=churn, drop=0.0, replications=args.reps, seed=21)
            caught = [simulate_guard(counts, accuracy, config, churn=churn, drop=d, replications=args.reps, seed=22)
                      for d in args.guard_drop]
            print(f"{churn:>6.0%} {equal:>13.1%} " + " ".join(f"{c:>13.1%}" for c in caught), flush=True)


def guard_slices(args: argparse.Namespace) -> dict:
    """The guard slices the verdict includes: ``--slice`` ones (paths as given), else the retrain default under
    ``--data``; none with ``--no-guards``."""
    from training.datasets import load_guard_slices
    from training.gate import DEFAULT_GUARD_SLICES

    if args.no_guards:
        return {}
    if args.slice:
        return load_guard_slices(Path.cwd(), [f"{labels_csv} {condition}" for labels_csv, condition in args.slice])
    return load_guard_slices(Path(args.data), DEFAULT_GUARD_SLICES)


def pair_split(args: argparse.Namespace, champion_config: dict) -> tuple[int, str, int | None]:
    """The dev split the pair is judged on: the champion's own (seed, split method, row limit, as the retrain's gate
    reads it), where --seed / --split-method do not name another. A fixed default judged the bundled model (a
    cluster split) on an exact split whose rows it had mostly trained or selected on."""
    from training.retrain import champion_split

    split = champion_split(champion_config)
    return (split["seed"] if args.seed is None else args.seed,
            split["split_method"] if args.split_method is None else args.split_method,
            split.get("limit_per_dataset"))


def real_pair(args: argparse.Namespace, guards: dict) -> None:
    from models.artifact import TRAINING_CONFIG_FILE, read_info
    from training.datasets import load_labeled_sets
    from training.evaluation import bootstrap_intervals
    from training.heldout import rows_unseen_by
    from training.retrain import candidate, dev_fingerprint

    champion_dir, challenger_dir = (Path(p) for p in args.pair)
    if args.unseen:
        records = [json.loads((d / TRAINING_CONFIG_FILE).read_text()) for d in (champion_dir, challenger_dir)]
        sets = rows_unseen_by(records, Path(args.data))
        described = "rows neither artifact trained or selected on"
    else:
        seed, method, limit = pair_split(args, json.loads((champion_dir / TRAINING_CONFIG_FILE).read_text()))
        sets = load_labeled_sets(Path(args.data), seed=seed, split_method=method, limit_per_dataset=limit).dev
        described = f"dev split seed {seed} / {method}" + (f" / limit {limit}" if limit else "")
    texts = [ex.text for exs in sets.values() for ex in exs[:32]][:96]
    sets = {**sets, **guards}
    champ = candidate(read_info(champion_dir).version, champion_dir, sets, texts, smoke=False)
    chall = candidate(read_info(challenger_dir).version, challenger_dir, sets, texts, smoke=True)
    result = evaluate_gate(champ, chall, GateConfig())
    print(f"{described}: {dict((k, len(v)) for k, v in sets.items())}, fingerprint {dev_fingerprint(sets)[:23]}")
    for name in sets:
        for task, (gold, _) in champ.predictions.get(name, {}).items():
            cells = []
            for model in (champ, chall):
                pred = model.predictions[name][task][1]
                ci = bootstrap_intervals(task, gold, pred, clusters=model.clusters.get(name, {}).get(task))
                m = model.metrics[name][task]
                cells.append(f"acc {m['accuracy']:.3f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}] "
                             f"macro-F1 {m['macro_f1']:.3f}")
            print(f"  {name:<16} n={len(gold):<5} champion {cells[0]} | challenger {cells[1]}")
    print(f"{champ.version} -> {chall.version}: {'PASSED' if result.passed else 'REJECTED'}")
    for name, cmp in result.comparisons.items():
        extra = f" disagree {cmp['disagreement']:.1%} n={cmp['n']}" if "disagreement" in cmp else ""
        print(f"  {name:<28} diff {cmp['diff']:+.4f} [{cmp['lower']:+.4f}, {cmp['upper']:+.4f}]{extra}")
    for c in result.failures:
        print(f"  FAIL {c.name}: {c.detail}")
    if args.json:
        print(json.dumps(result.comparisons, default=str, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400, help="Simulated replications per churn and case.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples per set in the simulation.")
    parser.add_argument("--drop", type=float, default=0.02, help="Macro-F1 loss of the 'worse' challenger.")
    parser.add_argument("--churn", type=float, nargs="+", default=[0.02, 0.03, 0.04, 0.06, 0.08, 0.10],
                        help="Shares of dev predictions the challenger changes.")
    parser.add_argument("--guard-drop", type=float, nargs="+", default=[0.02, 0.04],
                        help="Macro-F1 losses on the guard slice whose detection rate is simulated.")
    parser.add_argument("--guard-only", action="store_true", help="Simulate the guard slices only (seconds, not minutes).")
    parser.add_argument("--pair", nargs=2, metavar=("CHAMPION_DIR", "CHALLENGER_DIR"),
                        help="Judge two real artifact folders instead of simulating.")
    parser.add_argument("--data", default="../shared/data", help="Labeled data folder for --pair.")
    parser.add_argument("--seed", type=int, default=None,
                        help="Dev split seed for --pair [default: the champion's, from its training_config.json].")
    parser.add_argument("--split-method", default=None, choices=["exact", "cluster"],
                        help="Dev split method for --pair [default: the champion's; the bundled model's is "
                             "'cluster'].")
    parser.add_argument("--unseen", action="store_true",
                        help="With --pair: judge on the labeled rows neither artifact trained or selected on "
                             "(for artifacts trained on different splits) instead of the champion's dev split.")
    parser.add_argument("--slice", nargs=2, action="append", default=[], metavar=("LABELS_CSV", "COLUMN=VALUE"),
                        help="With --pair: a guard slice, the rows of a labels file where COLUMN=VALUE (repeatable), "
                             "e.g. ../shared/data/financial_phrasebank/valid.csv agreement=100; it votes: a clear "
                             "loss there rejects [default: the retrain default guard slices under --data].")
    parser.add_argument("--no-guards", action="store_true", help="With --pair: judge without guard slices.")
    parser.add_argument("--json", action="store_true", help="With --pair: also print the comparisons as JSON.")
    args = parser.parse_args()
    if not args.pair:
        simulate(args)
        return
    try:  # the guard slices are read before minutes of scoring, not after
        guards = guard_slices(args)
    except DatasetError as exc:
        parser.error(f"{'--slice' if args.slice else '--data'}: {exc}")
    real_pair(args, guards)


if __name__ == "__main__":
    main()
