"""Drift test on the Reuters stream: false alarms per quiet week, detection of injected shifts, vs old PSI.

The bundled model scores one year of Reuters headlines (``--year``, CPU serving path; predictions cached in
``--cache``). Each week is the recent window; its reference is the same seven weekdays in each of the
``--weeks`` preceding weeks (the stream has dates, no times, so the matching windows are whole days).
Printed for ``training.drift.decide_drift`` (chi-square + effect floor, the shipped thresholds) and, side
by side, the old rule (PSI > 0.2 on predicted labels):

* alarm rate on the real weeks (no injection; real news has some real shifts, so this bounds false alarms
  from above), at the week's own volume and on a random subsample of n = 200;
* detection at n = 2,000 (rows resampled from the week) of a sell-off (negative share +10 points) and an
  earnings season (Earnings share +13 points, i.e. 6 % -> 19 %);
* the same on **quiet weeks** (``--quiet-rounds``, default 5): the recent week and its reference weeks are
  rebuilt by shuffling, weekday by weekday, which of the block's weeks each real day belongs to. The days
  are real (their real day-to-day wobble and volume stay), but no week differs from the others by more than
  chance, so every alarm there is false. This is the "no shift" case the false-alarm target is about; the
  real order also holds real shifts (earnings seasons), so its alarm rate is an upper bound.

    nice -n 10 python benchmarks/bench_drift.py --year 2016
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from training.drift import DriftThresholds, decide_drift

STREAM = "reuters_news_stream/reuters_news_2011_2018.train.csv.gz"


def psi(ref: dict[str, int], rec: dict[str, int]) -> float:
    """The old rule's statistic (what training/drift.py used before issue 13), for comparison only."""
    labels = set(ref) | set(rec)
    a, b = sum(ref.values()), sum(rec.values())
    total = 0.0
    for label in labels:
        p, q = max(ref.get(label, 0) / a, 1e-4), max(rec.get(label, 0) / b, 1e-4)
        total += (q - p) * math.log(q / p)
    return total


def load_year(data: Path, year: int) -> tuple[list[date], list[str]]:
    seen, days, texts = set(), [], []
    with gzip.open(data / STREAM, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            day = row["published_date"]
            if not day.startswith(str(year)) or not row["headline"].strip():
                continue
            key = (day, row["headline"].strip().casefold())
            if key in seen:
                continue
            seen.add(key)
            days.append(date.fromisoformat(day))
            texts.append(row["headline"].strip())
    return days, texts


def score(texts: list[str], cache: Path) -> dict[str, np.ndarray]:
    if cache.is_file():
        got = dict(np.load(cache))
        if len(got["sentiment"]) == len(texts):
            return got
    from models import load_engine

    engine = load_engine()
    out = {"sentiment": [], "topic": [], "p_top": [], "topic_conf": []}
    for i in tqdm(range(0, len(texts), 256), desc="scoring", unit="batch"):
        for p in engine.classify(texts[i : i + 256]):
            out["sentiment"].append(SENTIMENT_LABELS.index(p.sentiment))
            out["topic"].append(TOPIC_LABELS.index(p.topic))
            out["p_top"].append(max(p.p_negative, p.p_neutral, p.p_positive))
            out["topic_conf"].append(p.topic_confidence)
    arrays = {k: np.asarray(v) for k, v in out.items()}
    np.savez(cache, **arrays)
    return arrays


def stats(idx: np.ndarray, s: dict[str, np.ndarray], low: float) -> dict:
    if len(idx) == 0:
        return {"sentiment": {}, "topic": {}, "n": 0, "sentiment_confidence": None, "topic_confidence": None,
                "low_confidence": 0}
    sent, top = s["sentiment"][idx], s["topic"][idx]
    return {"sentiment": {SENTIMENT_LABELS[k]: int(v) for k, v in Counter(sent.tolist()).items()},
            "topic": {TOPIC_LABELS[k]: int(v) for k, v in Counter(top.tolist()).items()}, "n": len(idx),
            "sentiment_confidence": float(s["p_top"][idx].mean()), "topic_confidence": float(s["topic_conf"][idx].mean()),
            "low_confidence": int(((s["p_top"][idx] < low) | (s["topic_conf"][idx] < low)).sum())}


def inject(rng: np.random.Generator, idx: np.ndarray, is_target: np.ndarray, share: float, n: int) -> np.ndarray:
    """n rows resampled from ``idx`` with the target class at ``share`` (target rows from the whole year when
    the week has none: a season brings headlines the week did not have)."""
    target, rest = idx[is_target[idx]], idx[~is_target[idx]]
    if len(target) == 0:
        target = np.flatnonzero(is_target)
    k = rng.binomial(n, share)
    return np.concatenate([rng.choice(target, k), rng.choice(rest, n - k)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="Folder holding the Reuters stream.")
    parser.add_argument("--year", type=int, default=2016, help="Year of the stream to replay.")
    parser.add_argument("--weeks", type=int, default=8, help="Matching reference weeks before each week.")
    parser.add_argument("--cache", type=Path, help="Prediction cache (.npz) [default: /tmp/mm-drift-<year>.npz].")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the subsampling and injections.")
    parser.add_argument("--alpha", type=float, default=DriftThresholds.alpha,
                        help="False-alarm rate of each test [default: the shipped one].")
    parser.add_argument("--min-effect", type=float, default=DriftThresholds.min_effect,
                        help="Smallest label-share change that counts [default: the shipped one].")
    parser.add_argument("--quiet-rounds", type=int, default=5,
                        help="Shuffled (quiet) versions of each week's block to judge [0 = skip].")
    args = parser.parse_args()
    th = DriftThresholds(alpha=args.alpha, min_effect=args.min_effect)
    days, texts = load_year(args.data, args.year)
    s = score(texts, args.cache or Path(f"/tmp/mm-drift-{args.year}.npz"))
    day_arr = np.asarray([d.toordinal() for d in days])
    first, last = day_arr.min(), day_arr.max()
    rng = np.random.default_rng(args.seed)
    neg = s["sentiment"] == SENTIMENT_LABELS.index("negative")
    earn = s["topic"] == TOPIC_LABELS.index("Earnings")
    rows = Counter()
    sizes = []
    by_day = {d: np.flatnonzero(day_arr == d) for d in np.unique(day_arr)}

    def days_of(ordinals: list[int]) -> np.ndarray:
        parts = [by_day[d] for d in ordinals if d in by_day]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=int)

    def judge_block(recent: np.ndarray, ref_weeks: list[np.ndarray], prefix: str) -> None:
        ref = np.concatenate(ref_weeks)
        ref_windows = [stats(idx, s, th.low_confidence) for idx in ref_weeks if len(idx)]
        ref_stats = stats(ref, s, th.low_confidence)

        def judge(idx: np.ndarray, key: str) -> None:
            rec = stats(idx, s, th.low_confidence)
            report = decide_drift(ref_windows, rec, th)
            rows[f"{prefix}new_{key}"] += report.drifted
            for reason in report.reasons if key == "full" else ():  # which test raised a no-injection alarm
                rows[f"{prefix}why_{' '.join(reason.split()[:2])}"] += 1
            rows[f"{prefix}old_{key}"] += max(psi(ref_stats[c], rec[c]) for c in ("sentiment", "topic")) > 0.2

        rows[f"{prefix}weeks"] += 1
        judge(recent, "full")
        judge(rng.choice(recent, 200, replace=False) if len(recent) >= 200 else recent, "200")
        judge(inject(rng, recent, neg, neg[ref].mean() + 0.10, 2000), "sell")
        judge(inject(rng, recent, earn, earn[ref].mean() + 0.13, 2000), "earn")

    for start in range(first + 7 * args.weeks, last - 6, 7):
        weeks = [[start - 7 * w + d for d in range(7)] for w in range(args.weeks + 1)]  # weeks[0] = recent
        recent = days_of(weeks[0])
        ref_weeks = [days_of(week) for week in weeks[1:]]
        if len(recent) < th.min_samples or sum(map(len, ref_weeks)) < th.min_samples:
            continue
        sizes.append(len(recent))
        judge_block(recent, ref_weeks, "")
        for _ in range(args.quiet_rounds):  # the same real days, week membership shuffled per weekday
            order = np.array([rng.permutation(len(weeks)) for _ in range(7)])  # (weekday, new week) -> old week
            shuffled = [[weeks[order[d, w]][d] for d in range(7)] for w in range(len(weeks))]
            quiet_recent = days_of(shuffled[0])
            if len(quiet_recent) >= th.min_samples:
                judge_block(quiet_recent, [days_of(week) for week in shuffled[1:]], "quiet_")
    w = rows["weeks"]
    print(f"Reuters {args.year}: {len(texts)} headlines, {w} weeks judged (median {int(np.median(sizes))} "
          f"headlines/week), reference = same weekdays of the {args.weeks} preceding weeks")
    print(f"thresholds: alpha {th.alpha} per test, min effect (largest label-share change) {th.min_effect}, "
          f"min samples {th.min_samples}")
    for prefix, title in (("", f"real order ({w} weeks)"), ("quiet_", f"quiet weeks ({rows['quiet_weeks']} "
                                                                    "shuffled blocks)")):
        n = rows[f"{prefix}weeks"]
        if not n:
            continue
        print(f"-- {title}")
        print(f"{'case':<44} {'new test':>9} {'old PSI>0.2':>12}")
        for key, label in (("full", "alarms on weeks (week's own n)"), ("200", "alarms on weeks (n = 200)"),
                           ("sell", "detected: negative +10 points (n = 2,000)"),
                           ("earn", "detected: Earnings +13 points (n = 2,000)")):
            print(f"{label:<44} {rows[prefix + 'new_' + key] / n:>9.1%} {rows[prefix + 'old_' + key] / n:>12.1%}")
        why = {k[len(prefix) + 4:]: v for k, v in rows.items() if k.startswith(prefix + "why_")}
        print(f"   alarms without injection by test: {why or 'none'}")


if __name__ == "__main__":
    main()
