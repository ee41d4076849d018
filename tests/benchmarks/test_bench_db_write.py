"""``bench_db_write.py`` reports the median of per-round ratios (each pair ran back to back) and alternates which
variant goes first; the old ratio of medians divided numbers from different rounds."""

from __future__ import annotations

import pytest

from benchmarks.bench_db_write import LIBRARY, SHIPPED, round_order, summarize


def test_summary_pairs_each_round() -> None:
    # the per-round numbers recorded in BENCHMARKS.md for the 2026-12-01 run
    summary = summarize({SHIPPED: [1577, 1021, 1744], LIBRARY: [1492, 1332, 1068]})
    assert [round(r, 2) for r in summary["ratios"]] == [1.06, 0.77, 1.63]
    assert summary["median_ratio"] == pytest.approx(1577 / 1492)
    # the ratio of the medians (1577 / 1332 = 1.18) is not what is reported
    assert summary["median_ratio"] != pytest.approx(1577 / 1332)
    assert summary["median_rows_per_s"] == {SHIPPED: 1577, LIBRARY: 1332}


def test_summary_refuses_unpaired_rounds() -> None:
    with pytest.raises(ValueError):
        summarize({SHIPPED: [1.0, 2.0], LIBRARY: [1.0]})


def test_first_variant_alternates() -> None:
    orders = [round_order(r) for r in range(4)]
    assert [o[0] for o in orders] == [SHIPPED, LIBRARY, SHIPPED, LIBRARY]
    assert all(sorted(o) == sorted((SHIPPED, LIBRARY)) for o in orders)
