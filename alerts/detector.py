"""Spike detection on negative share, per scope: a beta-binomial test with hysteresis (pure, no I/O).

Why beta-binomial: at low volume a plain binomial or z-test on a few articles fires on noise, and news
sentiment is over-dispersed (hour-to-hour swings exceed binomial noise even with no event). We treat the
scope's own baseline share as uncertain: Beta(a, b) from the trailing baseline counts, with the pseudo-count
capped at ``prior_strength`` so a long quiet baseline cannot make the test arbitrarily sharp. The current
span's negatives k of n are then tested with the beta-binomial upper tail P(X >= k); with ``min_span_windows``
every span length up to ``span_windows`` is tested and the most significant one judged (Bonferroni), because a
short sharp burst and a long moderate one are each clearest over their own length. Firing also needs a
minimum effect size and volume; resolving uses looser, separate thresholds (hysteresis), a minimum number of
clear windows, and a cooldown after resolve. While an alert is pending/firing the baseline stays frozen at
the pre-spike period, so the spike does not leak into its own baseline; with ``escalate_p`` each window is then
also judged against the trailing, unfrozen baseline, and a new event on top of the open one escalates it.

With ``design_lift`` the share test judges each span by a likelihood ratio instead: how much likelier its
k of n negatives are under "baseline share + design_lift" than under the baseline share (both beta-binomial,
so over-dispersion is allowed for on both sides), with 1/LR as its p-value (valid by Markov's inequality).
That is the Neyman-Pearson test for a rise of that size. Unlike the tail test, which asks the same
significance of 6 articles as of 60, it asks more of a few articles (5 of 5 negative is a big share but
little evidence of a lasting rise) and less of a long moderate one: at ticker volumes (a few articles per
window) that is what brought the rule close to the best possible detector (BENCHMARKS.md).

A second test watches the **negative count rate** (on-call's usual case: bad news arrives as *extra*
articles, so the share may move little while the count of negatives doubles). Its baseline is the scope's
negatives per window over the same trailing baseline, with a Gamma posterior on the rate (pseudo-count
capped at ``rate_prior_strength``, again for over-dispersion); the span's negative count is tested with
the negative-binomial predictive upper tail. It fires when that tail is at most ``rate_fire_p``, the count
is at least ``rate_min_count`` and ``rate_min_ratio`` times the expectation, and the share has not fallen
(excess share >= ``rate_min_delta``, so a surge of *all* news is not a negative spike). Either test can
open an episode; it resolves when both are clear. The rate test is opt-in per rule (``rate_fire_p``): on the
Reuters benchmark the share test alone already caught volume surges of negatives, and the rate test added
false alerts on ordinary volume swings (BENCHMARKS.md).

Each call judges one closed window; a window at or before ``last_window_end`` is ignored, so a replayed
evaluation cannot fire twice. ``ScopeState`` is plain JSON so the service persists it between runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import betainc

from alerts.windows import Counts, WindowSeries

Phase = Literal["idle", "pending", "firing"]


class DetectionParams(BaseModel):
    """Thresholds of one rule; every field can be set per rule in the rules file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    span_windows: int = Field(3, ge=1, le=288, description="Windows pooled as the 'current' sample.")
    min_span_windows: int | None = Field(None, ge=1, le=288, description=(
        "Scan: also test every shorter span down to this many windows and judge the most significant one "
        "(fire_p then holds for the scan as a whole, Bonferroni); null = only span_windows."))
    baseline_hours: float = Field(6.0, gt=0, le=24 * 14, description="Trailing baseline, before the span.")
    min_volume: int = Field(8, ge=1, description="Novel articles needed in the span to fire.")
    min_baseline_volume: int = Field(30, ge=1, description="Articles needed in the baseline to fire.")
    prior_strength: float = Field(60.0, gt=1, description="Cap of the baseline pseudo-count (over-dispersion).")
    design_lift: float | None = Field(None, gt=0, lt=1, description=(
        "Judge each span by the likelihood ratio of 'baseline share + this lift' against 'baseline share' "
        "(beta-binomial both) instead of the tail probability; its p-value is the likelihood-ratio bound "
        "1/LR, Bonferroni over the spans. At low volume this asks more of a few articles than the tail test "
        "does, and less of a sustained moderate rise (null = the tail test)."))
    fire_p: float = Field(0.001, gt=0, lt=1, description="Fire when the tail probability is at most this.")
    min_delta: float = Field(0.12, ge=0, le=1, description="... and the share is this far above baseline.")
    resolve_p: float = Field(0.05, gt=0, lt=1, description="Clear when the tail probability exceeds this ...")
    resolve_delta: float = Field(0.06, ge=0, le=1, description="... or the excess share falls below this.")
    min_duration_windows: int = Field(1, ge=1, description="Consecutive breaching windows before firing.")
    resolve_after_windows: int = Field(2, ge=1, description="Consecutive clear windows before resolving.")
    cooldown_minutes: float = Field(60.0, ge=0, description="No new alert for the scope this long after resolve.")
    cooldown_break_p: float | None = Field(None, gt=0, lt=1, description=(
        "A breach at least this significant fires even in the cooldown: a new, much stronger event, not a "
        "flap of the last one (null = the cooldown holds every breach)."))
    escalate_p: float | None = Field(None, gt=0, lt=1, description=(
        "Escalate a firing alert (a fresh notification with the new evidence) when a new breach against the "
        "scope's trailing, unfrozen baseline is at least this significant, after that test was clear once "
        "since the fire or the last escalation (null = never escalate)."))
    max_frozen_hours: float | None = Field(
        None, gt=0, description="Unfreeze the baseline after an alert lasts this long; default baseline_hours."
    )
    rate_fire_p: float | None = Field(
        None, gt=0, lt=1, description="Rate test: fire when the negative-count tail is at most this (null = off)."
    )
    rate_min_ratio: float = Field(2.0, ge=1, description="Rate test: span negatives at least this x expected.")
    rate_min_count: int = Field(8, ge=1, description="Rate test: at least this many negatives in the span.")
    rate_min_delta: float = Field(0.05, ge=-1, le=1, description="Rate test: the share must not fall (excess >= this).")
    rate_prior_strength: float = Field(30.0, gt=0, description="Rate test: cap of the baseline pseudo-count.")
    rate_resolve_ratio: float = Field(1.3, ge=0, description="Rate test is clear below this x expected.")

    @model_validator(mode="after")
    def _hysteresis(self) -> DetectionParams:
        if self.resolve_p < self.fire_p:
            raise ValueError(f"resolve_p ({self.resolve_p}) must be >= fire_p ({self.fire_p}) for hysteresis")
        if self.resolve_delta > self.min_delta:
            raise ValueError(f"resolve_delta ({self.resolve_delta}) must be <= min_delta ({self.min_delta})")
        if self.rate_fire_p is not None and self.rate_fire_p > self.resolve_p:
            # rate_clear is "rate p > resolve_p": a window could then breach and clear at once, and the alert
            # would resolve in the middle of the surge that fired it
            raise ValueError(f"rate_fire_p ({self.rate_fire_p}) must be <= resolve_p ({self.resolve_p}) for hysteresis")
        if self.rate_resolve_ratio > self.rate_min_ratio:
            raise ValueError(f"rate_resolve_ratio ({self.rate_resolve_ratio}) must be <= rate_min_ratio "
                             f"({self.rate_min_ratio}) for hysteresis")
        if self.min_span_windows is not None and self.min_span_windows > self.span_windows:
            raise ValueError(f"min_span_windows ({self.min_span_windows}) must be <= span_windows ({self.span_windows})")
        return self

    @property
    def spans(self) -> range:
        """Span lengths (windows) the share test scans, shortest first."""
        return range(self.min_span_windows or self.span_windows, self.span_windows + 1)


@dataclass(frozen=True, slots=True)
class Observation:
    """What the detector saw for one window: the evidence stored with an alert."""

    window_end: int
    baseline_end: int
    current: Counts
    baseline: Counts
    baseline_share: float | None
    current_share: float | None
    delta: float | None
    p_value: float
    z: float
    breach: bool
    clear: bool
    expected_negative: float = 0.0  # negatives the rate baseline expects in the span
    rate_p_value: float = 1.0
    fired_by: tuple[str, ...] = ()  # which tests breach: "share", "rate"
    span_windows: int = 0  # length of the span reported in ``current`` (0: unknown, old state)
    spans_scanned: int = 1  # span lengths tested; p_value is Bonferroni-adjusted by this many
    trailing: Observation | None = None  # while firing with escalate_p: the same window against the trailing baseline
    design_lift: float | None = None  # the share test's alternative (None: the tail test)

    def evidence(self) -> dict[str, object]:
        return {
            "window_end": self.window_end,
            "current_share": _round(self.current_share),
            "baseline_share": _round(self.baseline_share),
            "delta": _round(self.delta),
            "volume": self.current.n,
            "negative": self.current.negative,
            "baseline_volume": self.baseline.n,
            "baseline_negative": self.baseline.negative,
            "mean_score": _round(self.current.mean_score),
            "p_value": float(f"{self.p_value:.3g}"),
            "z": round(self.z, 2),
            "test": ("beta-binomial upper tail" if self.design_lift is None else
                     f"beta-binomial likelihood ratio, +{self.design_lift:g} share vs baseline (p = 1/LR)") + (
                f", most significant of {self.spans_scanned} spans (Bonferroni)" if self.spans_scanned > 1 else ""),
            "span_windows": self.span_windows,
            "expected_negative": round(self.expected_negative, 2),
            "rate_p_value": float(f"{self.rate_p_value:.3g}"),
            "rate_test": "negative-binomial upper tail of the negative count",
            "fired_by": list(self.fired_by),
        }


@dataclass(frozen=True, slots=True)
class Transition:
    kind: Literal["fire", "escalate", "resolve"]
    at: int  # window end (epoch s) at which the decision was made
    observation: Observation
    started_at: int  # end of the first breaching window of this episode


@dataclass(slots=True)
class ScopeState:
    """Detector memory of one (rule, scope); JSON round-trips via ``to_json``/``from_json``."""

    phase: Phase = "idle"
    last_window_end: int | None = None
    breach_count: int = 0
    clear_count: int = 0
    episode_start: int | None = None
    frozen_baseline_end: int | None = None
    cooldown_until: int | None = None
    escalations: int = 0  # escalations of the open alert so far
    escalation_armed: bool = False  # the trailing test was clear since the fire / the last escalation
    extra: dict[str, object] = field(default_factory=dict)

    def is_idle(self, now: int) -> bool:
        """True when nothing is worth persisting (no episode, no cooldown running)."""
        return self.phase == "idle" and (self.cooldown_until is None or self.cooldown_until <= now)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object] | None) -> ScopeState:
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _log_betabinom_kernel(k: int, n: int, a: float, b: float) -> float:
    """log P(X = k) for X ~ BetaBinomial(n, a, b), without the binomial coefficient (it cancels in ratios)."""
    lg = math.lgamma
    return lg(k + a) + lg(n - k + b) - lg(n + a + b) - (lg(a) + lg(b) - lg(a + b))


def _betabinom_sf(k: int, n: int, a: float, b: float) -> float:
    """P(X >= k), X ~ BetaBinomial(n, a, b), summed with the pmf ratio recurrence (fast for news volumes)."""
    lg = math.lgamma
    pmf = math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1) + _log_betabinom_kernel(k, n, a, b))
    total = 0.0
    for x in range(k, n + 1):
        total += pmf
        if x < n:
            pmf *= (n - x) / (x + 1) * (x + a) / (n - x - 1 + b)
    return min(1.0, total)


def _baseline_belief(baseline: Counts, prior_strength: float) -> tuple[float, float]:
    """The baseline's negative share (smoothed) and the pseudo-count it is believed with, capped at
    ``prior_strength`` (over-dispersion): what every share test and the reported z start from."""
    return (baseline.negative + 0.5) / (baseline.n + 1.0), min(float(baseline.n), prior_strength)


def _beta(share: float, strength: float) -> tuple[float, float]:
    """Beta(a, b) with mean ~share and ``strength`` pseudo-articles (plus a flat Beta(1, 1))."""
    return 1.0 + share * strength, 1.0 + (1.0 - share) * strength


def tail_probability(k: int, n: int, baseline: Counts, prior_strength: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(n, a, b), with Beta(a, b) fitted to the baseline share."""
    if n == 0 or k == 0:
        return 1.0
    share, strength = _baseline_belief(baseline, prior_strength)
    return _betabinom_sf(k, n, *_beta(share, strength))


def lift_log_likelihood_ratio(k: int, n: int, baseline: Counts, prior_strength: float, lift: float) -> float:
    """log LR of k negatives in n under 'baseline share + lift' against 'baseline share', each a beta-binomial
    with the pseudo-count of ``tail_probability`` (so over-dispersion widens both). By Markov's inequality
    P(LR >= 1/alpha) <= alpha under the null, so exp(-log LR) is a valid, conservative p-value."""
    if n == 0:
        return 0.0
    share, strength = _baseline_belief(baseline, prior_strength)
    raised = min(share + lift, 1.0 - 1e-6)
    return (_log_betabinom_kernel(k, n, *_beta(raised, strength))
            - _log_betabinom_kernel(k, n, *_beta(share, strength)))


def rate_tail_probability(k: int, span_windows: int, baseline_negative: int, baseline_windows: float,
                          prior_strength: float) -> float:
    """P(K >= k) for the span's negative count under the baseline rate: K ~ NegBin, the predictive of a
    Poisson count whose per-window rate has a Gamma(a, b) posterior from the baseline, a capped at
    ``prior_strength`` (same mean, wider: over-dispersion). Closed form: I_{1-p}(k, a), p = b / (b + s)."""
    if k <= 0:
        return 1.0
    a, b = baseline_negative + 0.5, max(baseline_windows, 1e-9)
    if a > prior_strength:
        b *= prior_strength / a
        a = prior_strength
    p = b / (b + span_windows)
    return float(betainc(k, a, 1.0 - p))


@dataclass(frozen=True, slots=True)
class _ShareTest:
    """The share test of one span: its counts, excess over baseline, (scan-adjusted) tail and verdicts."""

    span_windows: int
    current: Counts
    share: float | None
    delta: float | None
    p_value: float
    breach: bool
    clear: bool


def _span_p_value(params: DetectionParams, k: int, n: int, baseline: Counts) -> float:
    """One span's p-value: the beta-binomial tail, or with ``design_lift`` the likelihood-ratio bound 1/LR."""
    if params.design_lift is None:
        return tail_probability(k, n, baseline, params.prior_strength)
    llr = lift_log_likelihood_ratio(k, n, baseline, params.prior_strength, params.design_lift)
    return 1.0 if llr <= 0 else math.exp(-llr)  # no evidence for the rise; and exp(-llr) cannot overflow


def _share_test(params: DetectionParams, span_windows: int, current: Counts, baseline: Counts,
                tests: int) -> _ShareTest:
    n, k = current.n, current.negative
    base_share, cur_share = baseline.negative_share, current.negative_share
    delta = None if base_share is None or cur_share is None else cur_share - base_share
    # The tail is only needed when the excess could matter (saves time on quiet scopes).
    relevant = delta is not None and delta >= params.resolve_delta
    p_value = min(1.0, _span_p_value(params, k, n, baseline) * tests) if relevant else 1.0
    breach = (
        n >= params.min_volume
        and baseline.n >= params.min_baseline_volume
        and delta is not None
        and delta >= params.min_delta
        and p_value <= params.fire_p
    )
    clear = delta is None or delta < params.resolve_delta or p_value > params.resolve_p
    return _ShareTest(span_windows, current, cur_share, delta, p_value, breach, clear)


def observe(params: DetectionParams, series: WindowSeries, window_end: int, state: ScopeState) -> Observation:
    """Measure the span(s) ending at ``window_end`` against the scope's baseline (frozen while alerting).

    With a scan (``min_span_windows``) every span length is tested against the same baseline, which ends
    before the longest span; the most significant breaching span (else the most significant one) is
    reported, and the scope is clear only when every span is."""
    w = series.window_s
    span_start = window_end - params.span_windows * w
    baseline_end = span_start
    max_frozen = (params.max_frozen_hours or params.baseline_hours) * 3600
    if state.frozen_baseline_end is not None:
        # "after an alert lasts this long": from the episode's first breach, not from the start of its span (the
        # freeze ended a span early, and never held at all when the span was as long as max_frozen)
        began = (state.episode_start if state.episode_start is not None
                 else state.frozen_baseline_end + params.span_windows * w)
        if window_end - began <= max_frozen:
            baseline_end = min(baseline_end, state.frozen_baseline_end)
    baseline_start = baseline_end - int(params.baseline_hours * 3600)
    baseline = series.range(baseline_start, baseline_end)
    spans = params.spans
    tests = [_share_test(params, length, series.range(window_end - length * w, window_end), baseline, len(spans))
             for length in spans]
    whole = tests[-1]  # the longest span, span_windows: the rate test counts over it
    share = min(tests, key=lambda t: (not t.breach, t.p_value, -t.span_windows))
    share_breach, share_clear = share.breach, all(t.clear for t in tests)
    n, k = share.current.n, share.current.negative
    a, b = _beta(*_baseline_belief(baseline, params.prior_strength))  # the beta-binomial the share test uses
    mean = a / (a + b)
    var = n * mean * (1 - mean) * (1 + (n - 1) / (a + b + 1)) if n else 0.0
    z = (k - n * mean) / math.sqrt(var) if var > 0 else 0.0
    # The rate test: negatives per window against the same baseline period (empty windows count as zero,
    # time before the scope's first window with data *in the baseline* does not: a young series must not look
    # quiet). Data before the baseline is not looked at: how far back the caller fetched (a catch-up pass,
    # another scope's frozen baseline) changed the expected count, and with it the verdict.
    first_seen = series.first_start_from(baseline_start)
    observed_from = first_seen if first_seen is not None and first_seen < baseline_end else baseline_end
    baseline_windows = max(0, baseline_end - observed_from) / w
    expected = baseline.negative / baseline_windows * params.span_windows if baseline_windows else 0.0
    rate_on = params.rate_fire_p is not None and baseline.n >= params.min_baseline_volume
    rate_k = whole.current.negative
    rate_relevant = (rate_on and rate_k >= params.rate_min_count
                     and rate_k >= params.rate_resolve_ratio * max(expected, 1e-9))
    rate_p = (rate_tail_probability(rate_k, params.span_windows, baseline.negative, baseline_windows,
                                    params.rate_prior_strength) if rate_relevant else 1.0)
    rate_breach = (
        rate_relevant
        and rate_k >= params.rate_min_ratio * expected
        and whole.delta is not None
        and whole.delta >= params.rate_min_delta
        and rate_p <= (params.rate_fire_p or 0.0)
    )
    rate_clear = not rate_relevant or rate_p > params.resolve_p
    fired_by = tuple(name for name, hit in (("share", share_breach), ("rate", rate_breach)) if hit)
    trailing = None
    if state.phase == "firing" and params.escalate_p is not None:
        # The escalation test: the same window against the baseline the scope would have now, unfrozen.
        trailing = (observe(params, series, window_end, ScopeState()) if baseline_end != span_start else None)
    return Observation(window_end, baseline_end, share.current, baseline, baseline.negative_share, share.share,
                       share.delta, share.p_value, z, share_breach or rate_breach, share_clear and rate_clear,
                       expected, rate_p, fired_by, share.span_windows, len(spans), trailing, params.design_lift)


def step(params: DetectionParams, state: ScopeState, obs: Observation) -> tuple[ScopeState, Transition | None]:
    """Advance one scope's state machine by one window; returns the new state and any transition."""
    t = obs.window_end
    if state.last_window_end is not None and t <= state.last_window_end:
        return state, None  # replayed or out-of-order window: already judged
    s = replace(state, last_window_end=t, extra=dict(state.extra))
    w_cooldown = int(params.cooldown_minutes * 60)
    if s.phase == "firing":
        s.clear_count = s.clear_count + 1 if obs.clear else 0
        if s.clear_count >= params.resolve_after_windows:
            started = s.episode_start if s.episode_start is not None else t
            s = ScopeState(last_window_end=t, cooldown_until=t + w_cooldown)
            return s, Transition("resolve", t, obs, started)
        return _escalation(params, s, obs)
    if not obs.breach:
        if s.phase == "pending":  # a flap: the breach did not last long enough
            s.phase, s.breach_count, s.episode_start, s.frozen_baseline_end = "idle", 0, None, None
        return s, None
    if s.cooldown_until is not None and t < s.cooldown_until and not _breaks_cooldown(params, obs):
        return s, None
    if s.phase == "idle":
        # A new episode: freeze the baseline where it ended for the first breaching span.
        s.phase, s.breach_count, s.episode_start, s.frozen_baseline_end = "pending", 0, t, obs.baseline_end
    s.breach_count += 1
    if s.breach_count >= params.min_duration_windows:
        s.phase, s.clear_count = "firing", 0
        return s, Transition("fire", t, obs, s.episode_start or t)
    return s, None


def _escalation(params: DetectionParams, s: ScopeState, obs: Observation) -> tuple[ScopeState, Transition | None]:
    """While firing: a new event on top of the open one escalates it (once per clear-then-breach of the
    trailing test, so a long alert that stays high is not re-sent every window; reminders do that)."""
    if params.escalate_p is None:
        return s, None
    trailing = obs.trailing or obs  # no frozen baseline in force: the window's own test is the trailing one
    if trailing.clear:
        s.escalation_armed = True
        return s, None
    if not (s.escalation_armed and trailing.breach and _strongest_tail(trailing) <= params.escalate_p):
        return s, None
    s.escalation_armed, s.escalations, s.clear_count = False, s.escalations + 1, 0
    return s, Transition("escalate", obs.window_end, trailing, s.episode_start or obs.window_end)


def _strongest_tail(obs: Observation) -> float:
    tails = [p for test, p in (("share", obs.p_value), ("rate", obs.rate_p_value)) if test in obs.fired_by]
    return min(tails) if tails else 1.0


def _breaks_cooldown(params: DetectionParams, obs: Observation) -> bool:
    if params.cooldown_break_p is None:
        return False
    return _strongest_tail(obs) <= min(params.cooldown_break_p, params.fire_p)


def advance(
    params: DetectionParams, state: ScopeState, series: WindowSeries, window_ends: list[int]
) -> tuple[ScopeState, list[Transition], Observation | None]:
    """Judge several closed windows in order (catch-up after downtime, or a benchmark replay)."""
    transitions: list[Transition] = []
    obs: Observation | None = None
    for t in window_ends:
        obs = observe(params, series, t, state)
        state, tr = step(params, state, obs)
        if tr is not None:
            transitions.append(tr)
    return state, transitions, obs
