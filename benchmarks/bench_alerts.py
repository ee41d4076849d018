"""Detection-quality benchmark of the spike alerts: how close the shipped rule is to the best possible
detector, on a synthetic stream with an exactly known null and on the real Reuters stream.

    nice -n 10 python benchmarks/bench_alerts.py [--stream reuters --train-start 2016-01-01 \
        --test-start 2017-01-01 --max-articles 45000 --compress 24 --plot benchmarks/results/alerts_recall_vs_false.png]

All numbers in BENCHMARKS.md ("Spike alerts (issue 14)") come from this script.

Streams (``--stream``). **reuters** (default): Reuters headlines, day-precision dates spread over the day as
the publisher's reader does (``streams.sources.spread_time``). **stocknet**: StockNet tweets with their
second-precision times (English only, as ``marketmood publish --lang en``): per-ticker feeds far busier than
Reuters' company pages, so the ticker rule can be measured there. Both are read by the production reader
(``streams.sources.read_records``) from ``settings.data_path`` (never copied), train files only. Two slices
of the stream: a **training** slice (``--train-start``) on which every operating point is chosen, and a
later **test** slice (``--test-start``, the latest months used) on which everything is reported; nothing is
tuned on the test slice. Each slice: at most ``--max-articles`` unique records, syndication as in
production (a story key seen in the previous 6 h is not novel; only novel records count), texts scored by
the bundled model (cached in ``.marketmood/bench_alerts_scores.jsonl``), replayed ``--compress`` times
faster (default 24: one stream day = one replay hour, so scopes reach tens of articles per hour). Scopes:
the 20 topics, and the ``--tickers`` busiest tickers of the slice (a record counts for every ticker it is
tagged with).

Two versions of each stream:
* **real**: the scored counts as they are.
* **synthetic**: each scope keeps its real per-window volumes, and its negatives are drawn
  Binomial(n, p) at that scope's long-run share p. Here the null is known exactly, so the Neyman-Pearson
  likelihood-ratio detector that is told each burst's lift and duration is the best possible detector at
  a given false-alarm rate: the **ceiling**. Its false-alarm rates are averaged over ``--null-draws``
  independent draws (default 5): one draw of a short slice holds only a handful of false alerts.

Scenarios, injected at deterministic random times (seed) in slots whose trailing 6 h and burst volumes are
both >= ``--min-rate`` articles/hour, 8-12 h apart, ``--rounds`` rounds:
* **relabel**: a +``--lift`` (15 points) rise of the negative share for ``--burst-minutes`` (30) with
  the volume unchanged. Real stream: each non-negative article is flipped with probability lift / (1 -
  share), binomially (+15 points on average, not an exact count). Synthetic: negatives redrawn at p + lift.
* **surge**: what on-call usually sees: *extra* negative articles, real negative headlines of the same
  scope re-timed into the burst, doubling the scope's volume for 30 min (synthetic: the same extra count).
Detected = a fire in (burst start, burst end + 2 windows]; delay in windows from burst start. False alerts
are counted on the untouched stream, per scope per replay week. An escalation of an open alert (the rule's
``escalate_p``) is a notification like a fire, so it counts as one: a hit on a burst, a false alert elsewhere.

Methods:
* **shipped**: the bundled rule (``topic-negative-spike`` / ``ticker-negative-spike``) run by the production
  code (``alerts.detector.advance``): the beta-binomial share test (topics: scanning spans of 1..6 windows),
  the negative-count rate test off as in the bundled rules. ``--set kind.field=value`` tries a variant;
  choose variants with ``--recall-slice train`` (bursts injected into the training slice), never on test.
* **with-rate**: the same rule plus the negative-count rate test (``rate_fire_p`` 1e-4, scaled with fire_p).
* **naive**: one window's negative share above a threshold (min 3 articles).
* **LR**: log-likelihood-ratio scan over the last 1..D windows (D = burst length) of Binomial(n, p + lift)
  against Binomial(n, p); p is the true share on the synthetic stream (the ceiling) and the trailing 6 h
  share on the real stream (a reference, no longer optimal there). Only for the relabel scenario, which is
  the one it is told about.
Each method has one sensitivity knob (shipped/with-rate: fire_p and rate_fire_p scaled together; naive:
the share threshold; LR: the LLR threshold). Its **operating point** is the most sensitive setting with
<= ``--max-false`` false alerts per scope per week on the *training* slice; the report gives the test
slice's recall, false alerts and delays at that point, and the full recall-vs-false-alerts curves (PNG).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from itertools import islice
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.detector import DetectionParams, ScopeState, advance, observe, step  # noqa: E402
from alerts.rules import load_rules  # noqa: E402
from alerts.windows import Counts, WindowSeries  # noqa: E402
from marketmood.settings import REPO_ROOT, get_settings  # noqa: E402
from streams.novelty import story_key  # noqa: E402
from streams.sources import read_records, record_time, since  # noqa: E402

W = 300
NOVELTY_S = 6 * 3600
CACHE = REPO_ROOT / ".marketmood" / "bench_alerts_scores.jsonl"
SENSITIVITY = (100.0, 50.0, 30.0, 20.0, 10.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.1, 0.01, 0.001)  # x the rule's fire_p / rate_fire_p
NAIVE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LR_THRESHOLDS = (1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0)
COOLDOWN_W = 12  # windows a fired naive/LR detector stays quiet (the rules' 60-min cooldown)


@dataclass
class Item:
    id: str
    title: str
    t: int  # stream time, epoch s
    tickers: list[str] = field(default_factory=list)
    novel: bool = True
    topic: str = ""
    sentiment: str = ""


STREAMS = {  # --stream: file under settings.data_path, reader format, default slice starts (train, test)
    "reuters": ("reuters_news_stream/reuters_news_2011_2018.train.csv.gz", "reuters", "2016-01-01", "2017-01-01"),
    "stocknet": ("stocknet_tweets_stream/stocknet_tweets_2014_2016.train.csv.gz", "stocknet", "2014-01-01",
                 "2015-06-01"),
}


def load_stream(stream: str, start: str, max_articles: int) -> list[Item]:
    """Unique English records from ``start`` on (all their tickers), read by the production reader
    (``streams.sources.read_records``, as ``marketmood publish --lang en`` does) and syndication-marked as
    production does it."""
    rel, fmt, _, _ = STREAMS[stream]
    records = since(read_records(get_settings().data_path / rel, fmt=fmt, lang="en"),
                    datetime.fromisoformat(start).replace(tzinfo=timezone.utc))
    items = []
    for rec in islice(records, max_articles):
        moment = record_time(rec)
        if moment is not None:
            items.append(Item(rec["id"], rec["title"], int(moment.timestamp()), list(rec.get("tickers") or [])))
    items.sort(key=lambda i: (i.t, i.id))
    last_seen: dict[str, int] = {}
    for it in items:  # syndication, as storage.articles does it: same key within 6 h before -> not novel
        key = story_key(it.title)
        prev = last_seen.get(key)
        it.novel = prev is None or it.t - prev > NOVELTY_S
        last_seen[key] = it.t
    return items


def score(items: list[Item]) -> str:
    """Fill topic/sentiment from the cache, scoring what is missing with the bundled model.

    Only cached scores of the bundled model's current version count: after the model is replaced, a cache
    written by its predecessor would otherwise pass its scores off as the new model's."""
    from models.artifact import BUNDLED_MODEL_DIR, read_info

    version = read_info(BUNDLED_MODEL_DIR).version
    cached: dict[str, dict] = {}
    if CACHE.exists():
        for line in CACHE.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("model_version") == version:
                cached[rec["id"]] = rec
    missing = [it for it in items if it.id not in cached]
    if missing:
        from models import load_engine  # heavy (torch/onnxruntime): only when something must be scored

        engine = load_engine()
        version = engine.model_version
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with CACHE.open("a") as fh:
            for i in range(0, len(missing), 256):
                batch = missing[i:i + 256]
                for it, p in zip(batch, engine.classify([b.title for b in batch])):
                    rec = {"id": it.id, "topic": p.topic, "sentiment": p.sentiment, "score": round(p.score, 4),
                           "model_version": p.model_version}
                    cached[it.id] = rec
                    fh.write(json.dumps(rec) + "\n")
                done = i + len(batch)
                rate = done / (time.perf_counter() - started)
                print(f"scored {done}/{len(missing)} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    for it in items:
        it.topic, it.sentiment = cached[it.id]["topic"], cached[it.id]["sentiment"]
    return version


# --- per-scope window arrays ------------------------------------------------------------------------------

@dataclass
class Scope:
    """One scope's replay: per-window totals and negatives (numpy, index = window number from t0)."""

    name: str
    n: np.ndarray
    neg: np.ndarray
    pool: int = 0  # real negative headlines of this scope available for re-timing (surge scenario)


def build_scopes(items: list[Item], compress: int, kind: str, n_tickers: int) -> tuple[list[Scope], int, int]:
    """Scopes of one kind ('topic' or 'ticker') with their window arrays; returns (scopes, t0, windows)."""
    t0 = min(it.t for it in items) // 86_400 * 86_400
    novel = [it for it in items if it.novel]
    n_windows = max((t0 + (it.t - t0) // compress - t0) // W for it in novel) + 1
    keys: dict[str, list[int]] = defaultdict(list)
    negs: dict[str, list[int]] = defaultdict(list)
    for it in novel:
        wi = ((it.t - t0) // compress) // W
        for key in ([it.topic] if kind == "topic" else it.tickers):
            keys[key].append(wi)
            if it.sentiment == "negative":
                negs[key].append(wi)
    names = sorted(keys) if kind == "topic" else [k for k, _ in Counter({k: len(v) for k, v in keys.items()})
                                                  .most_common(n_tickers)]
    scopes = []
    for name in names:
        scopes.append(Scope(name, np.bincount(keys[name], minlength=n_windows),
                            np.bincount(negs[name], minlength=n_windows) if negs[name] else np.zeros(n_windows, int),
                            pool=len(negs[name])))
    return scopes, t0, n_windows


def long_run_share(s: Scope) -> float:
    """The scope's negative share over the whole slice: the synthetic stream's per-article probability."""
    return float(s.neg.sum() / max(1, s.n.sum()))


def synthetic(scopes: list[Scope], rng: np.random.Generator) -> list[Scope]:
    """Same volumes, negatives Binomial(n, long-run share of the scope): the null known exactly."""
    return [Scope(s.name, s.n.copy(), rng.binomial(s.n, long_run_share(s)), s.pool) for s in scopes]


def burst_slots(s: Scope, warmup_w: int, bw: int, min_rate: float, rng: random.Random) -> list[int]:
    """Window indices where a burst may start: enough volume before and during, 8-12 h apart."""
    per_h = 3600 // W
    slots, t = [], warmup_w + rng.randrange(0, 8 * per_h)
    while t + bw + 12 < len(s.n):
        base = s.n[max(0, t - 6 * per_h):t].sum() / 6
        during = s.n[t:t + bw].sum() * per_h / bw
        if base >= min_rate and during >= min_rate:
            slots.append(t)
        t += 8 * per_h + rng.randrange(0, 4 * per_h)
    return slots


def inject(s: Scope, starts: list[int], bw: int, scenario: str, lift: float, true_p: float | None,
           rng: np.random.Generator) -> Scope:
    """A copy of ``s`` with bursts: binomial relabelling (+lift on average) or a negative volume surge."""
    n, neg = s.n.copy(), s.neg.copy()
    for a in starts:
        sl = slice(a, a + bw)
        if scenario == "relabel":
            if true_p is not None:  # synthetic: redraw at the raised probability
                neg[sl] = rng.binomial(n[sl], min(1.0, true_p + lift))
            else:  # real: flip each non-negative with probability lift / (1 - share of the burst span)
                share = neg[sl].sum() / max(1, n[sl].sum())
                q = min(1.0, lift / max(1e-9, 1 - share))
                neg[sl] += rng.binomial(n[sl] - neg[sl], q)
        else:  # surge: extra negative articles doubling the volume
            extra = n[sl].copy()
            n[sl] += extra
            neg[sl] += extra
    return Scope(s.name, n, neg, s.pool)


# --- detectors ------------------------------------------------------------------------------------------

def series_of(s: Scope, t0: int) -> WindowSeries:
    idx = np.nonzero(s.n)[0]
    return WindowSeries(W, {t0 + int(i) * W: Counts(int(s.neg[i]), int(s.n[i] - s.neg[i]), 0) for i in idx})


NOTIFYING = ("fire", "escalate")  # transitions that page on-call: both count as alerts


def shipped_fires(params: DetectionParams, s: Scope, t0: int, warmup_w: int) -> list[int]:
    """Window indices (of the window *ending* the judged span, 1-based end) where the production rule fires."""
    ends = [t0 + (i + 1) * W for i in range(warmup_w, len(s.n))]
    _, transitions, _ = advance(params, ScopeState(), series_of(s, t0), ends)
    return [(t.at - t0) // W - 1 for t in transitions if t.kind in NOTIFYING]


def naive_fires(s: Scope, threshold: float, warmup_w: int, min_n: int = 3) -> list[int]:
    share = np.where(s.n >= min_n, s.neg / np.maximum(s.n, 1), 0.0)
    hit = share > threshold
    fires, quiet_until, above = [], -1, False
    for i in range(warmup_w, len(s.n)):
        if hit[i] and not above and i > quiet_until:
            fires.append(i)
            quiet_until = i + COOLDOWN_W
        above = bool(hit[i])
    return fires


def lr_stat(s: Scope, lift: float, bw: int, true_p: float | None, warmup_w: int) -> np.ndarray:
    """Per window: max over L in 1..bw of the LLR of the last L windows, Binomial(p + lift) vs Binomial(p)."""
    per_h = 3600 // W
    if true_p is not None:
        p0 = np.full(len(s.n), true_p)
    else:  # trailing 6 h share before the scanned span (a reference on the real stream)
        cn = np.concatenate([[0], np.cumsum(s.n)])
        ck = np.concatenate([[0], np.cumsum(s.neg)])
        idx = np.arange(len(s.n))
        hi = np.maximum(idx - bw + 1, 0)
        lo = np.maximum(hi - 6 * per_h, 0)
        p0 = (ck[hi] - ck[lo] + 0.5) / (cn[hi] - cn[lo] + 1.0)
    p0 = np.clip(p0, 1e-4, 1 - 1e-4)
    p1 = np.clip(p0 + lift, 1e-4, 1 - 1e-4)
    llr = s.neg * np.log(p1 / p0) + (s.n - s.neg) * np.log((1 - p1) / (1 - p0))
    best = np.full(len(s.n), -np.inf)
    run = np.zeros(len(s.n))
    for lag in range(bw):  # run = sum of the last lag+1 windows
        shifted = np.concatenate([np.zeros(lag), llr[:len(llr) - lag]]) if lag else llr.copy()
        run = run + shifted
        best = np.maximum(best, run)
    best[:warmup_w] = -np.inf
    return best


def lr_fires(stat: np.ndarray, h: float) -> list[int]:
    fires, quiet_until = [], -1
    for i in np.nonzero(stat >= h)[0]:
        if i > quiet_until:
            fires.append(int(i))
            quiet_until = int(i) + COOLDOWN_W
    return fires


RATE_FIRE_P = 1e-4  # the with-rate variant's rate_fire_p at knob 1


def scaled(params: DetectionParams, factor: float, rate: bool = False) -> DetectionParams:
    """The rule at another sensitivity: fire_p (and rate_fire_p, when on) times ``factor``."""
    fire_p = min(0.5, params.fire_p * factor)
    upd: dict[str, object] = {"fire_p": fire_p, "resolve_p": max(params.resolve_p, fire_p)}
    rate_p = params.rate_fire_p if params.rate_fire_p is not None else (RATE_FIRE_P if rate else None)
    upd["rate_fire_p"] = None if rate_p is None else min(0.5, rate_p * factor)
    return DetectionParams(**{**params.model_dump(), **upd})


# --- evaluation -----------------------------------------------------------------------------------------

def match(fires: list[int], starts: list[int], bw: int) -> tuple[list[float | None], int]:
    """Per burst the delay in windows (None = missed), and the fires matching no burst."""
    delays, used = [], set()
    for a in starts:
        hit = [f for f in fires if a <= f <= a + bw + 1]  # fire window index a..a+bw+1 = end in (a, a+bw+2]
        delays.append(hit[0] - a + 1 if hit else None)
        used.update(hit)
    return delays, len([f for f in fires if f not in used])


@dataclass
class Point:
    knob: float
    false_per_week: float
    recall: float = float("nan")
    delay_median: float = float("nan")
    delay_p90: float = float("nan")
    bursts: int = 0


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def fires_for(method: str, knob: float, s: Scope, t0: int, warmup_w: int, params: DetectionParams,
              lift: float, bw: int, true_p: float | None, cache: dict) -> list[int]:
    """Fires of one method at one knob on one scope; ``cache`` (one per curve) holds what knobs share: the
    LR statistic, and the rule's fires per effective parameters (knobs past the fire_p cap are one rule)."""
    if method in ("shipped", "with-rate"):
        rule = scaled(params, knob, rate=method == "with-rate")
        key = (id(s), rule)
        if key not in cache:
            cache[key] = shipped_fires(rule, s, t0, warmup_w)
        return cache[key]
    if method == "naive":
        return naive_fires(s, knob, warmup_w)
    key = id(s)
    if key not in cache:
        cache[key] = lr_stat(s, lift, bw, true_p, warmup_w)
    return lr_fires(cache[key], knob)


KNOBS = {"shipped": SENSITIVITY, "with-rate": SENSITIVITY, "naive": NAIVE_THRESHOLDS, "LR": LR_THRESHOLDS}


def replay_weeks(scopes: list[Scope], warmup_w: int) -> float:
    """Replay weeks of a slice that are judged (after the warm-up): the false-alarm rate's denominator."""
    return (len(scopes[0].n) - warmup_w) * W / (7 * 86_400)


def false_curve(method: str, scopes: list[Scope], t0: int, warmup_w: int, params: DetectionParams, lift: float,
                bw: int, true_p: dict[str, float] | None) -> dict[float, float]:
    """Knob -> false alerts per scope per replay week on the untouched stream."""
    weeks = replay_weeks(scopes, warmup_w)
    cache: dict = {}
    out = {}
    for knob in KNOBS[method]:
        total = sum(len(fires_for(method, knob, s, t0, warmup_w, params, lift, bw,
                                  true_p[s.name] if true_p else None, cache)) for s in scopes)
        out[knob] = total / (len(scopes) * weeks)
    return out


def injected_runs(scenario: str, scopes: list[Scope], warmup_w: int, args: argparse.Namespace,
                  true_p: dict[str, float] | None, min_rate: float) -> list[tuple[Scope, list[int], str]]:
    """(injected scope, burst starts, name) for every round and scope: the same draws for every method."""
    bw = args.burst_minutes * 60 // W
    slot_rng = random.Random(args.seed)
    draw_rng = np.random.default_rng(args.seed)
    runs = []
    for _ in range(args.rounds):
        for s in scopes:
            starts = burst_slots(s, warmup_w, bw, min_rate, slot_rng)
            if scenario == "surge":
                starts = [a for a in starts if s.pool >= int(s.n[a:a + bw].sum())]  # enough real headlines
            if starts:
                runs.append((inject(s, starts, bw, scenario, args.lift, true_p[s.name] if true_p else None,
                                    draw_rng), starts, s.name))
    return runs


def recall_curve(method: str, runs: list[tuple[Scope, list[int], str]], t0: int, warmup_w: int,
                 params: DetectionParams, args: argparse.Namespace, true_p: dict[str, float] | None,
                 false: dict[float, float]) -> list[Point]:
    bw = args.burst_minutes * 60 // W
    points = []
    cache: dict = {}
    for knob in KNOBS[method]:
        delays: list[float | None] = []
        for injected, starts, name in runs:
            fires = fires_for(method, knob, injected, t0, warmup_w, params, args.lift, bw,
                              true_p[name] if true_p else None, cache)
            delays += match(fires, starts, bw)[0]
        hit = [d for d in delays if d is not None]
        points.append(Point(knob, false[knob], len(hit) / len(delays) if delays else float("nan"),
                            pct(hit, 0.5), pct(hit, 0.9), len(delays)))
    return points


def miss_reasons(params: DetectionParams, runs: list[tuple[Scope, list[int], str]], t0: int, warmup_w: int,
                 bw: int) -> Counter:
    """Why the production rule missed each missed burst: the scope was already alerting or cooling down when
    it began, or the burst's most significant window failed a named threshold."""
    reasons: Counter = Counter()
    for injected, starts, name in runs:
        series, state, trace = series_of(injected, t0), ScopeState(), {}
        for i in range(warmup_w, len(injected.n)):
            t = t0 + (i + 1) * W
            obs = observe(params, series, t, state)
            before = state
            state, tr = step(params, state, obs)
            trace[i] = (before, obs, tr)
        fires = [i for i, (_, _, tr) in trace.items() if tr is not None and tr.kind in NOTIFYING]
        for a, delay in zip(starts, match(fires, starts, bw)[0]):
            if delay is not None:
                continue
            before, _, _ = trace[a]
            t_start = t0 + (a + 1) * W
            if before.phase == "firing":
                reasons[f"{name}: an earlier alert of the scope was still open"] += 1
                continue
            if before.cooldown_until is not None and before.cooldown_until > t_start:
                reasons[f"{name}: cooldown after an earlier alert"] += 1
                continue
            best = min((trace[j][1] for j in range(a, min(a + bw + 2, len(injected.n))) if j in trace),
                       key=lambda o: o.p_value)
            if best.current.n < params.min_volume or best.baseline.n < params.min_baseline_volume:
                why = "too few articles in its most significant span"
            elif best.delta is None or best.delta < params.min_delta:
                why = "excess share below min_delta"
            else:
                why = "tail above fire_p"
            reasons[f"{name}: {why}"] += 1
    return reasons


def false_by_scope(params: DetectionParams, scopes: list[Scope], t0: int, warmup_w: int) -> tuple[float, Counter]:
    """Replay-weeks of the slice and the production rule's false alerts per scope on the untouched stream:
    how many events a false-alarm rate rests on, and where they come from."""
    return replay_weeks(scopes, warmup_w), Counter({s.name: n for s in scopes if (n := len(shipped_fires(params, s, t0, warmup_w)))})


def operating_knob(method: str, train_false: dict[float, float], max_false: float) -> float:
    """The most sensitive knob with <= max_false on the training slice (knobs are ordered by sensitivity)."""
    ok = [k for k in KNOBS[method] if train_false[k] <= max_false]
    return ok[0] if ok else KNOBS[method][-1]


def with_overrides(params: dict[str, DetectionParams], overrides: list[str]) -> dict[str, DetectionParams]:
    """Apply ``--set kind.field=value`` experiments (validated by DetectionParams like a rules file)."""
    changes: dict[str, dict[str, object]] = defaultdict(dict)
    for item in overrides:
        key, sep, value = item.partition("=")
        kind, dot, name = key.partition(".")
        if not sep or not dot or kind not in params:
            raise SystemExit(f"--set expects KIND.FIELD=VALUE with KIND in {sorted(params)}, got {item!r}")
        changes[kind][name] = yaml.safe_load(value)
    return {kind: DetectionParams(**{**p.model_dump(), **changes[kind]}) for kind, p in params.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", choices=sorted(STREAMS), default="reuters",
                    help="replayed stream: Reuters headlines (day-precision, dates spread as the publisher does) "
                         "or StockNet tweets (second-precision; tickers far busier)")
    ap.add_argument("--train-start", default=None,
                    help="first day of the training slice (tuning); default per stream: "
                         + ", ".join(f"{k} {v[2]}" for k, v in STREAMS.items()))
    ap.add_argument("--test-start", default=None,
                    help="first day of the test slice (reported); default per stream: "
                         + ", ".join(f"{k} {v[3]}" for k, v in STREAMS.items()))
    ap.add_argument("--max-articles", type=int, default=45000,
                    help="unique records per slice (45,000 Reuters articles: ~1.2 replay-weeks, enough false alerts "
                         "to firm the rates; about 11 min for the topics on 2 cores)")
    ap.add_argument("--compress", type=int, default=24, help="replay speed-up (24: a stream day = a replay hour)")
    ap.add_argument("--lift", type=float, default=0.15, help="share lift of the relabel bursts")
    ap.add_argument("--burst-minutes", type=int, default=30, help="burst length (replay minutes)")
    ap.add_argument("--min-rate", type=float, default=20.0, help="articles/hour a scope needs for a burst slot")
    ap.add_argument("--rounds", type=int, default=3, help="injection rounds (different burst offsets)")
    ap.add_argument("--tickers", type=int, default=20, help="busiest tickers used as ticker scopes")
    ap.add_argument("--ticker-min-rate", type=float, default=1.0,
                    help="articles/hour a ticker needs for a burst slot (tickers are far sparser than topics)")
    ap.add_argument("--max-false", type=float, default=1.0, help="false alerts per scope per week allowed")
    ap.add_argument("--sensitivity", type=float, nargs="+", default=None, metavar="X",
                    help="the shipped/with-rate rules' sensitivity grid (multiples of fire_p), default "
                         + " ".join(f"{k:g}" for k in SENSITIVITY) + "; a finer grid compares variants on "
                         "operating points closer to --max-false, at more run time")
    ap.add_argument("--null-draws", type=int, default=5, metavar="K",
                    help="synthetic stream: independent null draws its false-alarm rates are averaged over (the "
                         "null is known exactly, so the rates need not rest on one draw's few false alerts)")
    ap.add_argument("--seed", type=int, default=13, help="seed of burst times and binomial draws")
    ap.add_argument("--kinds", nargs="*", default=["topic", "ticker"], help="scope kinds to run")
    ap.add_argument("--recall-slice", choices=["test", "train"], default="test",
                    help="slice the bursts are injected into and reported on; 'train' is for choosing between "
                         "detector variants (--set) without looking at the test slice")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KIND.FIELD=VALUE",
                    help="experiment: override a detection field of the bundled rule of a scope kind, e.g. "
                         "topic.min_delta=0.08 (repeatable; YAML values)")
    ap.add_argument("--misses", action="store_true",
                    help="also print why the shipped rule, at its train-chosen sensitivity, missed each burst")
    ap.add_argument("--false-by-scope", action="store_true",
                    help="also print, per slice, the shipped rule's false alerts per scope at its train-chosen "
                         "sensitivity (how many events each false-alarm rate rests on)")
    ap.add_argument("--json", type=Path, default=None, help="write the full report here")
    ap.add_argument("--plot", type=Path, default=None, help="save the recall-vs-false-alerts PNG here")
    ap.add_argument("--summarize", type=Path, default=None,
                    help="only print the markdown tables of an earlier --json report (no recomputation)")
    args = ap.parse_args()
    if args.summarize:
        print(summarize(json.loads(args.summarize.read_text()), args.max_false))
        return
    started = time.perf_counter()

    if args.sensitivity:
        KNOBS["shipped"] = KNOBS["with-rate"] = tuple(sorted(set(args.sensitivity), reverse=True))
    args.train_start = args.train_start or STREAMS[args.stream][2]
    args.test_start = args.test_start or STREAMS[args.stream][3]
    slices = {"train": load_stream(args.stream, args.train_start, args.max_articles),
              "test": load_stream(args.stream, args.test_start, args.max_articles)}
    version = score(slices["train"] + slices["test"])
    rules = {r.name: r for r in load_rules().rules}
    rule_of = {"topic": rules["topic-negative-spike"], "ticker": rules["ticker-negative-spike"]}
    params_of = with_overrides({kind: rule.detection for kind, rule in rule_of.items()}, args.overrides)
    bw = args.burst_minutes * 60 // W
    report: dict = {"model_version": version, "args": {k: str(v) for k, v in vars(args).items()},
                    "recall_slice": args.recall_slice,
                    "cpu": platform.processor() or platform.machine(), "results": {}}
    for name, items in slices.items():
        print(f"{name}: {len(items)} articles ({sum(i.novel for i in items)} novel), "
              f"{items[0].t and date.fromtimestamp(items[0].t)} .. {date.fromtimestamp(items[-1].t)}")
    curves: dict = {}
    for kind in args.kinds:
        params = params_of[kind]
        warmup_w = int(params.baseline_hours * 3600) // W
        for stream in ("synthetic", "real"):
            data, nulls = {}, {}
            for name, items in slices.items():
                scopes, t0, _ = build_scopes(items, args.compress, kind, args.tickers)
                true_p = None
                nulls[name] = scopes
                if stream == "synthetic":
                    # The generating share, not the draw's own: the ceiling is told the truth.
                    true_p = {s.name: long_run_share(s) for s in scopes}
                    draws = [synthetic(scopes, np.random.default_rng([args.seed, j])) for j in range(args.null_draws)]
                    scopes, nulls[name] = draws[0], [s for draw in draws for s in draw]
                data[name] = (scopes, t0, true_p)
            ev_scopes, ev_t0, ev_p = data[args.recall_slice]
            for scenario in ("relabel", "surge"):
                # One set of injected bursts per scenario, judged by every method.
                runs = injected_runs(scenario, ev_scopes, warmup_w, args, ev_p,
                                     args.min_rate if kind == "topic" else args.ticker_min_rate)
                for method in ("shipped", "with-rate", "naive", "LR"):
                    if method == "LR" and scenario == "surge":
                        continue
                    _, tr_t0, tr_p = data["train"]
                    _, te_t0, te_p = data["test"]
                    key = f"{kind}/{stream}/{scenario}/{method}"
                    # False alerts on the untouched stream; synthetic: over every null draw (their mean rate).
                    train_false = curves.get(("false", kind, stream, method, "train"))
                    if train_false is None:
                        train_false = false_curve(method, nulls["train"], tr_t0, warmup_w, params, args.lift, bw, tr_p)
                        curves[("false", kind, stream, method, "train")] = train_false
                    test_false = curves.get(("false", kind, stream, method, "test"))
                    if test_false is None:
                        test_false = false_curve(method, nulls["test"], te_t0, warmup_w, params, args.lift, bw, te_p)
                        curves[("false", kind, stream, method, "test")] = test_false
                    ev_false = test_false if args.recall_slice == "test" else train_false
                    points = recall_curve(method, runs, ev_t0, warmup_w, params, args, ev_p, ev_false)
                    knob = operating_knob(method, train_false, args.max_false)
                    op = next(p for p in points if p.knob == knob)
                    if args.false_by_scope and method == "shipped" and scenario == "relabel":
                        for name, (sc, st0, _) in data.items():
                            weeks, counts = false_by_scope(scaled(params, knob), sc, st0, warmup_w)
                            print(f"    {kind}/{stream} {name}: {sum(counts.values())} false alerts in {weeks:.2f} "
                                  f"replay-weeks x {len(sc)} scopes: {dict(counts.most_common())}", flush=True)
                    if args.misses and method == "shipped":
                        reasons = miss_reasons(scaled(params, knob), runs, ev_t0, warmup_w, bw)
                        report.setdefault("misses", {})[key] = dict(reasons)
                        for why, count in reasons.most_common():
                            print(f"    missed {count}: {why}", flush=True)
                    report["results"][key] = {"knob": knob, "train_false_per_week": round(train_false[knob], 3),
                                              "test": op.__dict__, "curve": [p.__dict__ for p in points]}
                    print(f"{key:<38} knob {knob:<7g} train FA/wk {train_false[knob]:5.2f} | test FA/wk "
                          f"{op.false_per_week:5.2f} recall {op.recall:.3f} median delay {op.delay_median} "
                          f"p90 {op.delay_p90} ({op.bursts} bursts)", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"took {report['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.plot:
        plot(report, args)
    print(summarize(json.loads(json.dumps(report, default=str)), args.max_false))


def at_matched_false(curve: list[dict], max_false: float) -> dict | None:
    """The curve point with the best recall among those with <= max_false false alerts per scope per week
    on the test slice (a matched false-alarm rate; on the synthetic stream the null is known exactly)."""
    ok = [p for p in curve if p["false_per_week"] <= max_false and p["recall"] == p["recall"]]
    return max(ok, key=lambda p: (p["recall"], -p["false_per_week"])) if ok else None


def summarize(report: dict, max_false: float) -> str:
    """Markdown tables for BENCHMARKS.md: operating points chosen on train, and recall at matched false rate."""
    ev = report.get("recall_slice", "test")  # the slice bursts were injected into ('train': variant selection)
    rows = [f"| scopes / stream / scenario | method | knob (train-chosen) | train FA/wk | {ev} FA/wk | recall | "
            f"median / p90 delay | recall at <= {max_false:g} FA/wk ({ev}) | bursts |",
            "|---|---|---|---|---|---|---|---|---|"]
    for key, res in report["results"].items():
        kind, stream, scenario, method = key.split("/")
        t = res["test"]
        m = at_matched_false(res["curve"], max_false)
        matched = f"{m['recall']:.3f} (knob {m['knob']:g}, {m['false_per_week']:.2f})" if m else "-"
        rows.append(f"| {kind} / {stream} / {scenario} | {method} | {res['knob']:g} | {res['train_false_per_week']:.2f} "
                    f"| {t['false_per_week']:.2f} | {t['recall']:.3f} | {t['delay_median']:g} / {t['delay_p90']:g} "
                    f"| {matched} | {t['bursts']} |")
    ratios = []
    for kind in ("topic", "ticker"):
        for stream in ("synthetic", "real"):
            ship = report["results"].get(f"{kind}/{stream}/relabel/shipped")
            lr = report["results"].get(f"{kind}/{stream}/relabel/LR")
            if not ship or not lr:
                continue
            a, b = at_matched_false(ship["curve"], max_false), at_matched_false(lr["curve"], max_false)
            if a and b and b["recall"] > 0:
                ratios.append(f"{kind}/{stream}: shipped {a['recall']:.3f} / LR {b['recall']:.3f} = "
                              f"{a['recall'] / b['recall']:.2f} (median delay {a['delay_median']:g} vs "
                              f"{b['delay_median']:g} windows)")
    return "\n".join(rows) + f"\n\nRecall ratio to the LR detector at <= {max_false:g} FA/wk ({ev}):\n" + \
        "\n".join(f"- {r}" for r in ratios)


def plot(report: dict, args: argparse.Namespace) -> None:
    import matplotlib  # heavy: only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = args.kinds
    fig, axes = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 9), squeeze=False)
    for col, kind in enumerate(kinds):
        for row, stream in enumerate(("synthetic", "real")):
            ax = axes[row][col]
            for method, style in (("shipped", "o-"), ("with-rate", "s--"), ("naive", "^:"), ("LR", "d-.")):
                res = report["results"].get(f"{kind}/{stream}/relabel/{method}")
                if not res:
                    continue
                pts = sorted(res["curve"], key=lambda p: p["false_per_week"])
                label = method if method != "LR" else ("LR ceiling (known null)" if stream == "synthetic"
                                                       else "LR, trailing baseline")
                ax.plot([max(p["false_per_week"], 1e-2) for p in pts], [p["recall"] for p in pts], style, label=label)
            surge = report["results"].get(f"{kind}/{stream}/surge/shipped")
            if surge:
                pts = sorted(surge["curve"], key=lambda p: p["false_per_week"])
                ax.plot([max(p["false_per_week"], 1e-2) for p in pts], [p["recall"] for p in pts], "o-",
                        alpha=0.4, label="shipped, volume surge")
            ax.axvline(args.max_false, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("false alerts per scope per week (test slice, untouched stream)")
            ax.set_ylabel("recall")
            ax.set_title(f"{kind} scopes, {stream} stream (+{args.lift:.2f} share bursts)")
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()
