"""Pure detection: low volume, flapping, plateau, replayed windows, minimum duration, cooldown."""

from __future__ import annotations

import random

import pytest

from alerts.detector import (
    DetectionParams,
    ScopeState,
    advance,
    observe,
    step,
    tail_probability,
)
from alerts.windows import Counts, WindowSeries

W = 300
T0 = 1_700_000_000 - (1_700_000_000 % W)


def make_series(shares: list[float], per_window: int, seed: int = 7) -> WindowSeries:
    """Windows with ``per_window`` articles each, negatives drawn at the given share (deterministic)."""
    rng = random.Random(seed)
    windows = {}
    for i, share in enumerate(shares):
        neg = sum(rng.random() < share for _ in range(per_window))
        windows[T0 + i * W] = Counts(neg, per_window - neg, 0, -0.5 * neg)
    return WindowSeries(W, windows)


def run(params: DetectionParams, series: WindowSeries, n: int, state: ScopeState | None = None):
    ends = [T0 + (i + 1) * W for i in range(n)]
    return advance(params, state or ScopeState(), series, ends)


P = DetectionParams()


def quiet_fires(params: DetectionParams, weeks: int) -> int:
    """Fires over ``weeks`` simulated weeks of 60 articles/hour at a steady 20 % negative share."""
    fires = 0
    for seed in range(weeks):
        _, transitions, _ = run(params, make_series([0.2] * 2016, per_window=5, seed=seed), 2016)
        fires += sum(t.kind == "fire" for t in transitions)
    return fires


def test_quiet_series_rarely_fires() -> None:
    assert quiet_fires(P, weeks=5) <= 1


def test_burst_fires_once_then_resolves_once() -> None:
    shares = [0.2] * 100 + [0.55] * 8 + [0.2] * 40
    series = make_series(shares, per_window=6)
    state, transitions, _ = run(P, series, len(shares))
    kinds = [t.kind for t in transitions]
    assert kinds == ["fire", "resolve"]
    fire, resolve = transitions
    assert T0 + 100 * W < fire.at <= T0 + 103 * W  # within 3 windows of the burst start
    assert T0 + 108 * W < resolve.at <= T0 + 115 * W
    ev = fire.observation.evidence()
    assert ev["current_share"] > ev["baseline_share"] + 0.12 and ev["p_value"] <= P.fire_p
    assert ev["volume"] >= P.min_volume
    assert state.phase == "idle" and state.cooldown_until == resolve.at + 3600


def test_low_volume_guard() -> None:
    # Two articles per window, all negative in a short burst: fewer than min_volume in the span -> no alert.
    shares = [0.2] * 100 + [1.0] * 1 + [0.2] * 20
    series = make_series(shares, per_window=2)
    _, transitions, _ = run(P, series, len(shares))
    assert transitions == []
    # And a beta-binomial tail at tiny n is never extreme: 2 of 2 negative against a 20% baseline.
    assert tail_probability(2, 2, Counts(20, 80), P.prior_strength) > 0.01


def test_low_volume_noise_over_days_stays_quiet() -> None:
    series = make_series([0.25] * 3000, per_window=2, seed=3)
    _, transitions, _ = run(P, series, 3000)
    assert transitions == []


def test_flapping_series_does_not_fire_with_min_duration() -> None:
    params = DetectionParams(min_duration_windows=3)
    # Alternating one hot window, one quiet window: never 3 consecutive breaching windows.
    shares = [0.2] * 100 + [0.9, 0.2, 0.2, 0.2] * 10 + [0.2] * 20
    series = make_series(shares, per_window=10)
    _, transitions, _ = run(params.model_copy(update={"span_windows": 1}), series, len(shares))
    assert transitions == []


def test_min_duration_delays_firing() -> None:
    shares = [0.2] * 100 + [0.7] * 10 + [0.2] * 30
    series = make_series(shares, per_window=10)
    _, t1, _ = run(DetectionParams(min_duration_windows=1), series, len(shares))
    _, t3, _ = run(DetectionParams(min_duration_windows=3), series, len(shares))
    assert [t.kind for t in t1] == [t.kind for t in t3] == ["fire", "resolve"]
    assert t3[0].at == t1[0].at + 2 * W
    assert t3[0].started_at == t1[0].started_at  # the episode start is the first breaching window


def test_flapping_around_resolve_threshold_gives_one_alert() -> None:
    # During a long spike the share dips to baseline for single windows: hysteresis keeps one alert open.
    shares = [0.2] * 100 + ([0.7] * 3 + [0.2]) * 6 + [0.2] * 30
    series = make_series(shares, per_window=10)
    _, transitions, _ = run(DetectionParams(span_windows=1, resolve_after_windows=2), series, len(shares))
    assert [t.kind for t in transitions] == ["fire", "resolve"]


def test_plateau_fires_once_and_resolves_when_new_normal() -> None:
    # The share jumps and stays there for 24 h: one alert; once the frozen baseline expires the new level is
    # the normal, the alert resolves, and the cooldown plus the adapted baseline prevent a re-fire.
    shares = [0.15] * 100 + [0.5] * 288
    series = make_series(shares, per_window=8)
    state, transitions, _ = run(P, series, len(shares))
    assert [t.kind for t in transitions] == ["fire", "resolve"]
    assert transitions[1].at - transitions[0].at >= 6 * 3600 - 3 * W  # stayed open while baseline was frozen
    assert state.phase == "idle"


def test_replayed_window_is_ignored() -> None:
    shares = [0.2] * 100 + [0.7] * 5
    series = make_series(shares, per_window=10)
    state, transitions, _ = run(P, series, 104)
    assert [t.kind for t in transitions] == ["fire"]
    # Judge the same window again (a restart that re-reads it, or a replayed message): no second fire.
    again = observe(P, series, T0 + 104 * W, state)
    state2, tr = step(P, state, again)
    assert tr is None and state2 == state
    # And JSON persistence round-trips the state exactly.
    assert ScopeState.from_json(state.to_json()) == state


def test_cooldown_blocks_refire_then_allows_it() -> None:
    params = DetectionParams(cooldown_minutes=60)
    # Burst, quiet 30 min (inside cooldown), burst, then a burst after the cooldown has passed.
    shares = [0.2] * 100 + [0.7] * 4 + [0.2] * 6 + [0.7] * 4 + [0.2] * 20 + [0.7] * 4 + [0.2] * 20
    series = make_series(shares, per_window=10)
    _, transitions, _ = run(params, series, len(shares))
    kinds = [t.kind for t in transitions]
    assert kinds == ["fire", "resolve", "fire", "resolve"]
    first_resolve, second_fire = transitions[1], transitions[2]
    assert second_fire.at >= first_resolve.at + 3600
    assert second_fire.at >= T0 + 134 * W  # the third burst, not the second


def test_state_survives_restart_midway() -> None:
    shares = [0.2] * 100 + [0.7] * 6 + [0.2] * 30
    series = make_series(shares, per_window=10)
    _, all_at_once, _ = run(P, series, len(shares))
    state, first, _ = run(P, series, 103)
    restored = ScopeState.from_json(state.to_json())
    ends = [T0 + (i + 1) * W for i in range(100, len(shares))]  # overlaps already judged windows
    _, second, _ = advance(P, restored, series, ends)
    assert [(t.kind, t.at) for t in first + second] == [(t.kind, t.at) for t in all_at_once]


def _surge_series(extra_negative: bool, seed: int = 3) -> WindowSeries:
    """8 articles per window at a 25% negative share; for 6 windows the volume doubles: either with extra
    negative articles (bad news arriving) or with extra articles at the usual share (a busy news day)."""
    rng = random.Random(seed)
    windows = {}
    for i in range(160):
        neg = sum(rng.random() < 0.25 for _ in range(8))
        extra_neg, extra_other = 0, 0
        if 100 <= i < 106:
            if extra_negative:
                extra_neg = 8
            else:
                extra_neg = sum(rng.random() < 0.25 for _ in range(8))
                extra_other = 8 - extra_neg
        windows[T0 + i * W] = Counts(neg + extra_neg, 8 - neg + extra_other, 0)
    return WindowSeries(W, windows)


def test_volume_surge_of_negatives_fires_the_rate_test() -> None:
    params = DetectionParams(min_delta=0.3, fire_p=1e-6, rate_fire_p=1e-4)  # this strict a share test misses it
    _, transitions, _ = run(params, _surge_series(True), 160)
    fires = [t for t in transitions if t.kind == "fire"]
    assert len(fires) == 1 and T0 + 100 * W < fires[0].at <= T0 + 103 * W
    assert "rate" in fires[0].observation.fired_by  # ... the negative count rate does not
    ev = fires[0].observation.evidence()
    assert ev["negative"] >= 2 * ev["expected_negative"] and ev["rate_p_value"] <= params.rate_fire_p
    off = DetectionParams(min_delta=0.3, fire_p=1e-6, rate_fire_p=None)
    assert [t for t in run(off, _surge_series(True), 160)[1] if t.kind == "fire"] == []


def test_busy_news_day_at_the_usual_share_does_not_fire() -> None:
    _, transitions, _ = run(DetectionParams(rate_fire_p=1e-4), _surge_series(False), 160)
    assert transitions == []  # twice the news, same mix: not a negative spike (neither test fires)


# --- multi-span scan ---------------------------------------------------------------------------------------

SCAN = DetectionParams(span_windows=6, min_span_windows=1, fire_p=0.001, min_delta=0.12, resolve_p=0.05,
                       resolve_delta=0.06, prior_strength=200)
FIXED_LONG = DetectionParams(**{**SCAN.model_dump(), "min_span_windows": None})


def counts_series(pairs: list[tuple[int, int]]) -> WindowSeries:
    """Windows of (negatives, volume)."""
    return WindowSeries(W, {T0 + i * W: Counts(k, n - k, 0) for i, (k, n) in enumerate(pairs)})


def test_scan_sees_a_short_sharp_burst_that_the_long_span_dilutes() -> None:
    # 6 h of 20 % at 10/window, then one window at 9/10 negative: 15 % excess over 6 windows, 70 % over 1.
    pairs = [(2, 10)] * 72 + [(2, 10)] * 5 + [(9, 10)]
    series = counts_series(pairs)
    end = T0 + len(pairs) * W
    long_only = observe(FIXED_LONG, series, end, ScopeState())
    scanned = observe(SCAN, series, end, ScopeState())
    assert not long_only.breach
    assert scanned.breach and scanned.span_windows == 1 and scanned.spans_scanned == 6
    assert scanned.evidence()["span_windows"] == 1 and "Bonferroni" in str(scanned.evidence()["test"])
    # The reported p is the scan's (Bonferroni): 6x the single-span tail of that window.
    single = DetectionParams(**{**SCAN.model_dump(), "span_windows": 1, "min_span_windows": None})
    one = observe(single, series, end, ScopeState())
    assert one.current == scanned.current
    assert abs(scanned.p_value - min(1.0, 6 * one.p_value)) < 1e-12


def test_scan_prefers_the_long_span_for_a_sustained_moderate_burst() -> None:
    # +30 points for 6 windows of 10: no single window is convincing, the whole span is.
    pairs = [(2, 10)] * 72 + [(5, 10)] * 6
    series = counts_series(pairs)
    obs = observe(SCAN, series, T0 + len(pairs) * W, ScopeState())
    assert obs.breach and obs.span_windows >= 4


def test_scan_is_clear_only_when_every_span_is() -> None:
    # The burst ended 3 windows ago: the short spans are back to normal, the 6-window span still holds it.
    pairs = [(2, 10)] * 72 + [(8, 10)] * 3 + [(2, 10)] * 3
    series = counts_series(pairs)
    obs = observe(SCAN, series, T0 + len(pairs) * W, ScopeState())
    assert not obs.clear
    quiet = counts_series([(2, 10)] * 84)
    assert observe(SCAN, quiet, T0 + 84 * W, ScopeState()).clear


def test_scan_false_alarms_stay_bounded_on_a_binomial_null() -> None:
    # Bonferroni keeps the scan no more trigger-happy than one span at fire_p.
    assert quiet_fires(SCAN, weeks=4) <= 1


def test_min_span_cannot_exceed_span() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="min_span_windows"):
        DetectionParams(span_windows=3, min_span_windows=4)


def test_the_rate_test_needs_hysteresis_too() -> None:
    """rate_fire_p above resolve_p let one window breach and clear at once: an alert fired by a surge resolved
    two windows later in the middle of it, and the cooldown then held the re-page."""
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rate_fire_p"):
        DetectionParams(rate_fire_p=0.2, resolve_p=0.05)
    with pytest.raises(ValidationError, match="rate_resolve_ratio"):
        DetectionParams(rate_fire_p=0.001, rate_min_ratio=2.0, rate_resolve_ratio=2.5)
    DetectionParams(rate_fire_p=0.05, resolve_p=0.05, rate_min_ratio=2.0, rate_resolve_ratio=2.0)  # equal is fine


def test_a_much_stronger_event_breaks_the_cooldown_a_flap_does_not() -> None:
    # A burst fires and resolves; 20 min later (inside the 60-min cooldown) a second, much bigger one comes.
    quiet, burst, big = (2, 10), (7, 10), (10, 10)
    pairs = [quiet] * 72 + [burst] * 4 + [quiet] * 8 + [big] * 4 + [quiet] * 10
    params = DetectionParams(fire_p=0.001, min_delta=0.12, cooldown_minutes=60, prior_strength=200)
    _, transitions, _ = run(params, counts_series(pairs), len(pairs))
    assert [t.kind for t in transitions] == ["fire", "resolve"]  # the cooldown holds the second burst
    breaking = DetectionParams(**{**params.model_dump(), "cooldown_break_p": 1e-6})
    _, transitions, _ = run(breaking, counts_series(pairs), len(pairs))
    kinds = [t.kind for t in transitions]
    assert kinds[:3] == ["fire", "resolve", "fire"]
    second = transitions[2]
    assert T0 + 84 * W < second.at <= T0 + 88 * W and second.observation.p_value <= 1e-6
    # A flap (the same size as the first burst) stays held even with the break allowed.
    flap = [quiet] * 72 + [burst] * 4 + [quiet] * 8 + [burst] * 2 + [quiet] * 10
    _, transitions, _ = run(breaking, counts_series(flap), len(flap))
    assert [t.kind for t in transitions] == ["fire", "resolve"]


def test_a_new_event_on_top_of_an_open_alert_escalates_it_once() -> None:
    # The share jumps to a new level and stays (the alert stays open: its baseline is frozen for 12 h); once
    # the 2-h trailing baseline has caught up, a second, bigger jump is a new event: one escalation, judged
    # against the trailing level, not a fresh alert and not one escalation per window.
    shares = [0.15] * 100 + [0.5] * 60 + [0.95] * 12 + [0.5] * 10
    series = make_series(shares, per_window=10)
    params = DetectionParams(baseline_hours=2, max_frozen_hours=12, prior_strength=200)
    _, transitions, _ = run(params, series, len(shares))
    assert [t.kind for t in transitions] == ["fire"]  # without escalate_p: silent while open
    escalating = DetectionParams(**{**params.model_dump(), "escalate_p": 1e-3})
    state, transitions, _ = run(escalating, series, len(shares))
    assert [t.kind for t in transitions] == ["fire", "escalate"]
    fire, escalation = transitions
    assert T0 + 100 * W < fire.at <= T0 + 103 * W
    assert T0 + 160 * W < escalation.at <= T0 + 163 * W  # the second jump, at once
    assert escalation.started_at == fire.started_at  # the same alert episode
    assert 0.4 <= (escalation.observation.baseline_share or 0) <= 0.6  # the trailing level, not the frozen 0.15
    assert escalation.observation.p_value <= 1e-3
    assert state.phase == "firing" and state.escalations == 1
    assert ScopeState.from_json(state.to_json()) == state


def test_an_alert_that_just_fired_does_not_escalate_on_its_own_burst() -> None:
    # One long strong burst: the trailing test breaches from the fire on and is never clear in between, so
    # the open alert is not re-sent as an escalation of itself.
    shares = [0.15] * 100 + [0.9] * 20 + [0.15] * 30
    params = DetectionParams(escalate_p=0.01, prior_strength=200)
    _, transitions, _ = run(params, make_series(shares, per_window=10), len(shares))
    assert [t.kind for t in transitions] == ["fire", "resolve"]


# --- the design-lift likelihood-ratio share test ---------------------------------------------------------

LIFT = DetectionParams(span_windows=6, min_span_windows=1, design_lift=0.15, fire_p=0.05, resolve_p=0.5,
                       prior_strength=200, min_volume=5)
BASE_20 = Counts(40, 160, 0)  # a baseline of 200 articles at 20 % negative


def test_likelihood_ratio_asks_more_of_few_articles_than_the_tail_test() -> None:
    import math

    from alerts.detector import lift_log_likelihood_ratio

    def lr_p(k: int, n: int) -> float:
        return math.exp(-lift_log_likelihood_ratio(k, n, BASE_20, 200, 0.15))

    # 5 of 5 negative is the more extreme share, 16 of 40 the better evidence of a lasting +15-point rise:
    # the tail test ranks them one way, the likelihood ratio the other.
    assert tail_probability(5, 5, BASE_20, 200) < tail_probability(16, 40, BASE_20, 200)
    assert lr_p(5, 5) > lr_p(16, 40)
    # A handful of articles can never be enough: even all of them negative stays above 5 %.
    assert lr_p(5, 5) > 0.05 and lr_p(6, 6) > 0.02
    # The ratio rises with the negatives (a monotone test: more negatives is never less evidence).
    ps = [lr_p(k, 30) for k in range(31)]
    assert all(a >= b for a, b in zip(ps, ps[1:]))


def test_likelihood_ratio_p_value_is_valid_on_a_binomial_null() -> None:
    import math

    import numpy as np

    from alerts.detector import lift_log_likelihood_ratio

    rng = np.random.default_rng(3)
    for n in (5, 20, 60, 200):
        ks = rng.binomial(n, 0.2, size=20_000)
        p = np.array([math.exp(-lift_log_likelihood_ratio(int(k), n, BASE_20, 200, 0.15)) for k in ks])
        for alpha in (0.1, 0.05, 0.01):
            assert (p <= alpha).mean() <= alpha, (n, alpha)


def test_likelihood_ratio_scan_fires_on_a_sustained_rise_not_on_a_flash() -> None:
    quiet = [(2, 10)] * 72
    sustained = counts_series(quiet + [(5, 10)] * 6)  # +30 points over 30 min
    flash = counts_series(quiet + [(2, 10)] * 5 + [(6, 6)])  # one window entirely negative
    obs = observe(LIFT, sustained, T0 + 78 * W, ScopeState())
    assert obs.breach and obs.span_windows >= 4
    assert "likelihood ratio" in str(obs.evidence()["test"])
    assert not observe(LIFT, flash, T0 + 78 * W, ScopeState()).breach
    # The tail test at the same fire_p fires on the flash: that is the difference.
    tail = DetectionParams(**{**LIFT.model_dump(), "design_lift": None, "resolve_p": 0.05})
    assert observe(tail, flash, T0 + 78 * W, ScopeState()).breach


def test_likelihood_ratio_rule_stays_quiet_on_a_binomial_null() -> None:
    assert quiet_fires(DetectionParams(**{**LIFT.model_dump(), "fire_p": 0.01}), weeks=4) <= 1


def _sparse_scope() -> tuple[DetectionParams, dict, int, int]:
    """A scope whose 6-h baseline has articles only in its last hour (9 of 36 negative), then 8 of 20 negative
    in the 3-window span; rate test on (the helper audit's numbers)."""
    from alerts.windows import Counts

    w, end = 300, 1_700_000_000 // 300 * 300
    span_start = end - 3 * w
    windows = {span_start - (i + 1) * w: Counts(1 if i < 9 else 0, 2 if i < 9 else 3, 0) for i in range(12)}
    windows.update({span_start: Counts(3, 4, 0), span_start + w: Counts(3, 4, 0), span_start + 2 * w: Counts(2, 4, 0)})
    return DetectionParams(min_delta=0.3, fire_p=1e-6, rate_fire_p=1e-3), windows, end, span_start - 6 * 3600


def test_the_rate_test_does_not_depend_on_data_before_the_baseline() -> None:
    """One article an hour before the baseline (in the series because a catch-up pass, or another scope's
    frozen baseline, fetched further back) moved the expected count from 2.25 to 0.375 and flipped the verdict:
    live evaluation stayed silent where a catch-up pass paged."""
    from alerts.windows import Counts, WindowSeries

    params, windows, end, baseline_start = _sparse_scope()
    live = observe(params, WindowSeries(300, windows), end, ScopeState())
    earlier = observe(params, WindowSeries(300, {**windows, baseline_start - 3600: Counts(0, 1, 0)}), end, ScopeState())
    assert (earlier.expected_negative, earlier.rate_p_value, earlier.breach) == (
        live.expected_negative, live.rate_p_value, live.breach)
    assert live.expected_negative == pytest.approx(2.25)


def test_catch_up_and_live_evaluation_agree() -> None:
    """The service judges several windows in one pass after downtime; window by window it fetches exactly the
    baseline: both must give the same transitions."""
    from alerts.windows import Counts, WindowSeries

    params, windows, end, baseline_start = _sparse_scope()
    full = {**windows, baseline_start - 3600: Counts(0, 1, 0)}
    span, baseline = params.span_windows * 300, int(params.baseline_hours * 3600)
    ends = [end - 12 * 300 + i * 300 for i in range(13)]

    def fetched(t0: int, t1: int) -> WindowSeries:
        return WindowSeries(300, {s: c for s, c in full.items() if t0 <= s < t1})

    state, live = ScopeState(), []
    for e in ends:
        state, transitions, _ = advance(params, state, fetched(e - span - baseline, e), [e])
        live += [(t.kind, t.at) for t in transitions]
    _, transitions, _ = advance(params, ScopeState(), fetched(ends[0] - span - baseline, ends[-1]), ends)
    assert [(t.kind, t.at) for t in transitions] == live


def test_the_baseline_stays_frozen_for_max_frozen_from_the_first_breach() -> None:
    """The freeze was measured from the first breach's span start, a span before the episode began: it ended a
    span early (5.5 h of the documented 6 for the shipped topic rule), and never held when the span was as
    long as the freeze."""
    from alerts.windows import WindowSeries

    params = DetectionParams(span_windows=12, baseline_hours=1)
    t0 = 1_700_000_000 // 300 * 300
    state = ScopeState(phase="firing", episode_start=t0, frozen_baseline_end=t0 - 12 * 300)
    assert observe(params, WindowSeries(300, {}), t0 + 300, state).baseline_end == state.frozen_baseline_end
    assert observe(params, WindowSeries(300, {}), t0 + 3600, state).baseline_end == state.frozen_baseline_end
    assert observe(params, WindowSeries(300, {}), t0 + 3900, state).baseline_end == t0 + 3900 - 12 * 300  # unfrozen


def test_the_reported_z_is_that_of_the_beta_binomial_the_test_uses() -> None:
    """Evidence only: z used the smoothed share as the mean and (strength + 1) in the variance."""
    import math

    from alerts.detector import _beta, _baseline_belief
    from alerts.windows import Counts, WindowSeries

    params = DetectionParams(span_windows=1)
    t = 1_700_000_000 // 300 * 300
    obs = observe(params, WindowSeries(300, {t - 600: Counts(20, 80, 0), t - 300: Counts(18, 22, 0)}), t, ScopeState())
    a, b = _beta(*_baseline_belief(Counts(20, 80, 0), params.prior_strength))
    mean, n = a / (a + b), 40
    exact = (18 - n * mean) / math.sqrt(n * mean * (1 - mean) * (a + b + n) / (a + b + 1))
    assert obs.z == pytest.approx(exact, abs=0.01)
