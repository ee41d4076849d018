"""Temperature scaling, ECE and bootstrap intervals on synthetic data whose answers are known."""

import numpy as np

from training.calibration import cross_fitted, fit_temperature, reliability, softmax
from training.evaluation import bootstrap_intervals, task_metrics


def _overconfident(n=4000, true_t=2.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 3))
    p = softmax(logits, true_t)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return logits, labels


def test_fit_temperature_recovers_the_true_one_and_lowers_ece():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert 1.8 < t < 2.2
    before, after = reliability(softmax(logits), labels), reliability(softmax(logits, t), labels)
    assert after["ece"] < before["ece"] / 2
    assert sum(b["n"] for b in before["bins"]) == len(labels)
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_n():
    rng = np.random.default_rng(1)
    def sample(n):
        t = rng.integers(0, 3, n)
        return t, np.where(rng.random(n) < 0.8, t, rng.integers(0, 3, n))
    small, large = sample(200), sample(5000)
    ci_small = bootstrap_intervals("sentiment", *small)
    ci_large = bootstrap_intervals("sentiment", *large)
    m = task_metrics("sentiment", small[0].tolist(), small[1].tolist(), intervals=True)
    for key in ("accuracy", "macro_f1"):
        lo, hi = m["ci95"][key]
        assert lo <= m[key] <= hi
        assert (ci_large[key][1] - ci_large[key][0]) < (ci_small[key][1] - ci_small[key][0]) / 3
    assert bootstrap_intervals("sentiment", *small) == ci_small  # seeded: the card's numbers reproduce


def test_cross_fitted_reports_held_out_ece_and_ships_the_full_fit():
    logits, labels = _overconfident(n=3000, true_t=2.5, seed=3)
    result = cross_fitted(logits, labels, folds=2)
    assert 2.2 < result["temperature"] < 2.8
    assert len(result["fold_temperatures"]) == 2
    assert all(2.0 < t < 3.0 for t in result["fold_temperatures"])
    assert result["after"]["ece"] < result["before"]["ece"] / 2
    assert result["after"]["n"] == result["before"]["n"] == len(labels)
    # A model that is already calibrated keeps T near 1, and the held-out ECE does not get worse by much.
    calibrated_logits, calibrated_labels = _overconfident(n=3000, true_t=1.0, seed=4)
    honest = cross_fitted(calibrated_logits, calibrated_labels)
    assert 0.9 < honest["temperature"] < 1.1
    assert honest["after"]["ece"] < honest["before"]["ece"] + 0.02


def test_without_a_selection_split_the_cards_ece_after_is_cross_fitted():
    """select_fraction=0: the temperature was fitted on the dev rows and the card's "ECE after" judged that fit on
    the same rows (in-sample, flattering). It is cross-fitted now; with a selection split nothing changes."""
    from training.trainer import calibrate_head

    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, size=(400, 3))
    labels = rng.integers(0, 3, size=400)  # labels unrelated to the logits: overconfident, T fits large
    folded = cross_fitted(logits, labels)
    temperature, before, after = calibrate_head((logits, labels), (logits, labels), same_rows=True)
    assert temperature == folded["temperature"] and after["ece"] == folded["after"]["ece"]
    in_sample = reliability(softmax(logits, temperature), labels)["ece"]
    assert after["ece"] > in_sample  # the in-sample figure the card printed before was the flattering one
    other = (rng.normal(0, 3, size=(300, 3)), rng.integers(0, 3, size=300))
    t2, _, after2 = calibrate_head(other, (logits, labels), same_rows=False)
    assert after2["ece"] == reliability(softmax(logits, t2), labels)["ece"]
