"""The alert benchmark's own machinery: the ceiling is only a yardstick if the synthetic null, the null-draw
averaging and the LR detector do what BENCHMARKS.md says they do (pure functions, no data files)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_alerts", ROOT / "benchmarks" / "bench_alerts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_alerts"] = module
    spec.loader.exec_module(module)
    return module


def scope(bench, windows: int = 4000, per_window: int = 8, share: float = 0.25, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = rng.poisson(per_window, windows)
    return bench.Scope("S", n, rng.binomial(n, share), pool=10_000)


def test_synthetic_draws_keep_volumes_and_the_generating_share(bench) -> None:
    real = [scope(bench, share=0.3)]
    draws = [bench.synthetic(real, np.random.default_rng([13, j])) for j in range(5)]
    assert all((d[0].n == real[0].n).all() for d in draws)
    assert len({d[0].neg.tobytes() for d in draws}) == 5  # independent draws, not one draw five times
    pooled = sum(int(d[0].neg.sum()) for d in draws) / (5 * real[0].n.sum())
    assert abs(pooled - bench.long_run_share(real[0])) < 0.01


def test_false_rate_over_draws_is_the_mean_of_the_draws(bench) -> None:
    real = [scope(bench)]
    p = {"S": bench.long_run_share(real[0])}
    draws = [bench.synthetic(real, np.random.default_rng([13, j])) for j in range(3)]
    params = bench.DetectionParams()
    per_draw = [bench.false_curve("LR", d, 0, 72, params, 0.15, 6, p) for d in draws]
    pooled = bench.false_curve("LR", [s for d in draws for s in d], 0, 72, params, 0.15, 6, p)
    for knob in bench.LR_THRESHOLDS:
        assert pooled[knob] == pytest.approx(sum(c[knob] for c in per_draw) / 3)
    # A stricter threshold never raises the false-alarm rate.
    rates = [pooled[k] for k in bench.LR_THRESHOLDS]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_the_ceiling_sees_a_clear_burst_and_misses_nothing_it_should_not(bench) -> None:
    base = scope(bench, per_window=12, share=0.2, seed=4)
    starts = [1000, 2000, 3000]
    burst = bench.inject(base, starts, 6, "relabel", 0.4, 0.2, np.random.default_rng(1))
    stat = bench.lr_stat(burst, 0.4, 6, 0.2, 72)
    fires = bench.lr_fires(stat, 8.0)
    delays, unmatched = bench.match(fires, starts, 6)
    assert all(d is not None and d <= 6 for d in delays)
    quiet = bench.lr_fires(bench.lr_stat(base, 0.4, 6, 0.2, 72), 8.0)
    assert unmatched <= len(quiet)  # every other fire is one the untouched stream has too


def test_surge_doubles_volume_with_negatives_only_inside_the_burst(bench) -> None:
    base = scope(bench)
    out = bench.inject(base, [500], 6, "surge", 0.15, None, np.random.default_rng(0))
    assert (out.n[500:506] == 2 * base.n[500:506]).all()
    assert (out.neg[500:506] - base.neg[500:506] == base.n[500:506]).all()
    assert (out.n[:500] == base.n[:500]).all() and (out.n[506:] == base.n[506:]).all()


def test_cached_scores_of_another_model_version_are_rescored(bench, tmp_path, monkeypatch) -> None:
    """After the bundled model is replaced, its predecessor's cached scores must not pass as the new model's."""
    from models.artifact import BUNDLED_MODEL_DIR, read_info

    current = read_info(BUNDLED_MODEL_DIR).version
    cache = tmp_path / "scores.jsonl"
    stale = {"id": "a", "topic": "Macro", "sentiment": "stale-label", "score": 1.0, "model_version": "an-older-model"}
    fresh = {"id": "b", "topic": "Macro", "sentiment": "cached-label", "score": 1.0, "model_version": current}
    cache.write_text("\n".join(json.dumps(r) for r in (stale, fresh)) + "\n")
    monkeypatch.setattr(bench, "CACHE", cache)  # the benchmark's cache location, not MarketMood code
    items = [bench.Item("a", "Shares of Acme plunge after fraud charges", 0), bench.Item("b", "unused title", 0)]
    assert bench.score(items) == current
    assert items[0].sentiment in {"negative", "neutral", "positive"}  # scored again by the bundled model
    assert items[1].sentiment == "cached-label"  # a current-version record is reused as is
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert records[-1]["id"] == "a" and records[-1]["model_version"] == current
