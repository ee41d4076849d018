"""Window counts and a fast range-sum series over them (pure, no I/O).

The database aggregates novel articles into fixed windows aligned to the Unix epoch (``window_s`` long);
``WindowSeries`` answers "how many negative / total articles between t0 and t1" in O(log n) with prefix
sums, so the detector can compare a current span with a trailing baseline cheaply, also in the benchmark.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Counts:
    """Sentiment counts of the novel articles of one window (or a sum of windows)."""

    negative: int = 0
    neutral: int = 0
    positive: int = 0
    score_sum: float = 0.0

    @property
    def n(self) -> int:
        return self.negative + self.neutral + self.positive

    @property
    def negative_share(self) -> float | None:
        return self.negative / self.n if self.n else None

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.n if self.n else None

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.negative + other.negative,
            self.neutral + other.neutral,
            self.positive + other.positive,
            self.score_sum + other.score_sum,
        )


def window_start(t: int, window_s: int) -> int:
    """Start (epoch seconds) of the window holding ``t``."""
    return t - (t % window_s)


class WindowSeries:
    """Per-window counts of one scope with O(log n) range sums; windows are keyed by start (epoch s)."""

    def __init__(self, window_s: int, windows: Mapping[int, Counts] | Iterable[tuple[int, Counts]] = ()) -> None:
        self.window_s = window_s
        items = sorted(windows.items() if isinstance(windows, Mapping) else windows)
        self._starts: list[int] = []
        self._cum: list[tuple[int, int, int, float]] = [(0, 0, 0, 0.0)]
        for start, c in items:
            if start % window_s:
                raise ValueError(f"window start {start} is not aligned to {window_s}s")
            if self._starts and start <= self._starts[-1]:
                raise ValueError("duplicate window start")
            neg, neu, pos, ss = self._cum[-1]
            self._starts.append(start)
            self._cum.append((neg + c.negative, neu + c.neutral, pos + c.positive, ss + c.score_sum))

    def range(self, t0: int, t1: int) -> Counts:
        """Sum of the windows whose start lies in [t0, t1)."""
        i = bisect.bisect_left(self._starts, t0)
        j = bisect.bisect_left(self._starts, t1)
        if j <= i:
            return Counts()
        a, b = self._cum[i], self._cum[j]
        return Counts(b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3])

    def windows(self, t0: int, t1: int) -> list[tuple[int, Counts]]:
        """Each window with data in [t0, t1), for evidence and plots."""
        i = bisect.bisect_left(self._starts, t0)
        j = bisect.bisect_left(self._starts, t1)
        out = []
        for k in range(i, j):
            a, b = self._cum[k], self._cum[k + 1]
            out.append((self._starts[k], Counts(b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3])))
        return out

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def first_start(self) -> int | None:
        """Start of the earliest window with data (before it the scope was not observed at all)."""
        return self._starts[0] if self._starts else None

    def first_start_from(self, t0: int) -> int | None:
        """Start of the earliest window with data at or after ``t0``, or None."""
        i = bisect.bisect_left(self._starts, t0)
        return self._starts[i] if i < len(self._starts) else None
