"""Length-sorted micro-batching with index bookkeeping (pure: numpy only, no model, no I/O).

Padding every text of a batch to the longest text of the whole request wastes most of a transformer's
work on short headlines. Sorting by token length first and cutting micro-batches from the sorted order
means each micro-batch is padded only to its own longest text; the bookkeeping here puts the results
back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def plan_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None, max_padding: float | None = None
) -> list[list[int]]:
    """Split input indices into micro-batches of texts of similar length, longest first.

    Longest first so that a batch that cannot fit in device memory fails on the first call, not at the end.
    The sort is stable, so equal-length texts keep their input order. ``max_tokens`` caps rows x padded
    width, so a batch of 512-token articles holds fewer rows than a batch of headlines (bounded memory).
    ``max_padding`` (a fraction of the width, e.g. 0.1) starts a new batch as soon as the next text would be
    padded by more than that: a 32-headline request spanning 5-64 tokens is otherwise padded to 64 whole,
    nearly twice the work on a CPU (BENCHMARKS.md), whereas smaller batches cost a CPU little.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if max_padding is not None and not 0 <= max_padding < 1:
        raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        width = max(1, lengths[order[start]])  # the first text of a batch is its longest: it sets the width
        rows = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // width))
        stop = min(start + rows, len(order))
        if max_padding is not None:
            shortest_allowed = (1 - max_padding) * width
            end = start + 1
            while end < stop and lengths[order[end]] >= shortest_allowed:
                end += 1
            stop = end
        batches.append(order[start:stop])
        start = stop
    return batches


def unique_sequences(sequences: Sequence[Sequence[int]]) -> tuple[list[Sequence[int]], list[int]]:
    """Distinct token sequences in first-seen order, and for every input the index of its distinct copy.

    Why: a stream batch often repeats a text (one Reuters headline per ticker, retweets: 11.8% and 19.7%
    of the first 600 titles / tweets of the shared streams repeat within their 32-message request, BENCHMARKS.md); scoring each distinct text once saves that work and gives
    identical texts identical scores (dynamic int8 quantizes activations with one scale per micro-batch, padded
    positions included, so a text's probabilities move with its batch: typically ~1e-2, up to ~0.2 for a few
    texts in a shuffled 256-text request, where 2 % of topic labels flipped in a 2026-12-07 audit).
    """
    first: dict[tuple[int, ...], int] = {}
    distinct: list[Sequence[int]] = []
    inverse: list[int] = []
    for seq in sequences:
        key = tuple(seq)
        index = first.get(key)
        if index is None:
            index = first[key] = len(distinct)
            distinct.append(seq)
        inverse.append(index)
    return distinct, inverse


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pad token id sequences to the longest one of *this* batch: (input_ids, attention_mask), int64."""
    if not sequences:
        raise ValueError("cannot pad an empty batch")
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def restore_order(batches: Sequence[Sequence[int]], batch_results: Sequence[Sequence[T]], n: int) -> list[T]:
    """Scatter per-batch results (aligned with each batch's indices) back to input order."""
    out: list[T | None] = [None] * n
    for indices, results in zip(batches, batch_results, strict=True):
        if len(indices) != len(results):
            raise ValueError(f"batch of {len(indices)} texts returned {len(results)} results")
        for index, result in zip(indices, results):
            out[index] = result
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise ValueError(f"no result for input indices {missing[:10]}")
    return out  # type: ignore[return-value]


def call_with_halving(
    fn: Callable[[slice], list[T]],
    n: int,
    should_split: Callable[[BaseException], bool],
    on_split: Callable[[int], None] | None = None,
) -> list[T]:
    """Run ``fn`` over rows ``0..n``; when it fails with a splittable error, retry each half recursively.

    Used for CUDA out-of-memory: a batch that does not fit is cut in two and each half retried, down to a
    single row, which re-raises (nothing smaller can be tried). ``fn`` returns one result per row.
    """

    def run(start: int, stop: int) -> list[T]:
        try:
            return fn(slice(start, stop))
        except BaseException as exc:
            if stop - start <= 1 or not should_split(exc):
                raise
        # The halves run *after* the except block: inside it, the caught error's traceback still holds the
        # failed attempt's frames and with them its activation tensors, so each retry met a fuller GPU and a
        # batch that would fit split down to one row and failed.
        mid = (start + stop) // 2
        if on_split is not None:
            on_split(stop - start)
        return run(start, mid) + run(mid, stop)

    return run(0, n) if n else []
