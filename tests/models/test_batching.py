import numpy as np
import pytest

from models.batching import call_with_halving, pad_batch, plan_batches, restore_order, unique_sequences


def test_plan_batches_sorts_longest_first_and_covers_every_index():
    lengths = [5, 30, 12, 30, 2, 8, 19]
    batches = plan_batches(lengths, batch_size=3)
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert flat[:2] == [1, 3]  # stable: equal lengths keep input order


def test_plan_batches_caps_tokens_per_batch():
    lengths = [512, 500, 130, 128, 20, 20, 20, 20]
    batches = plan_batches(lengths, batch_size=4, max_tokens=1024)
    assert batches == [[0, 1], [2, 3, 4, 5], [6, 7]]  # 2 x 512, then 4 x 130, then the rest
    assert plan_batches([5000], batch_size=4, max_tokens=1024) == [[0]]  # one text always fits


def test_plan_batches_limits_padding_per_batch():
    lengths = [64, 60, 58, 40, 39, 10, 9, 9, 5]
    assert plan_batches(lengths, batch_size=8, max_padding=0.1) == [[0, 1, 2], [3, 4], [5, 6, 7], [8]]
    assert plan_batches(lengths, batch_size=8) == [[0, 1, 2, 3, 4, 5, 6, 7], [8]]  # off: one batch padded to 64
    assert plan_batches(lengths, batch_size=2, max_padding=0.1) == [[0, 1], [2], [3, 4], [5, 6], [7], [8]]


@pytest.mark.parametrize("seed", range(20))
def test_plan_batches_invariants_on_random_lengths(seed):
    """Fuzzed: every index once, longest first, every cap respected, and no batch cut before a cap required it."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 130, size=int(rng.integers(1, 200))).tolist()
    batch_size, max_tokens = int(rng.integers(1, 70)), int(rng.choice([0, 256, 2048]))
    max_padding = float(rng.choice([0.0, 0.1, 0.3, 0.9]))
    batches = plan_batches(lengths, batch_size, max_tokens or None, max_padding)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for batch, following in zip(batches, batches[1:] + [None]):
        width = lengths[batch[0]]
        assert len(batch) <= batch_size
        assert len(batch) == 1 or not max_tokens or len(batch) * width <= max_tokens
        assert all(lengths[i] >= (1 - max_padding) * width for i in batch)
        if following is not None:  # maximal: the next text would have broken one of the three caps
            nxt = lengths[following[0]]
            rows = len(batch) + 1
            assert rows > batch_size or (max_tokens and rows * width > max_tokens) or nxt < (1 - max_padding) * width


def test_plan_batches_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        plan_batches([1, 2], 0)
    with pytest.raises(ValueError):
        plan_batches([1, 2], 4, max_tokens=0)
    with pytest.raises(ValueError):
        plan_batches([1, 2], 4, max_padding=1.0)
    assert plan_batches([], 4) == []


def test_pad_batch_pads_only_to_the_batch_longest():
    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(ValueError):
        pad_batch([])


def test_round_trip_returns_results_in_input_order():
    texts = ["a" * n for n in (3, 17, 1, 9, 17, 4, 25, 2)]
    batches = plan_batches([len(t) for t in texts], batch_size=3)
    results = [[texts[i].upper() for i in b] for b in batches]  # a per-text function computed batch by batch
    assert restore_order(batches, results, len(texts)) == [t.upper() for t in texts]


def test_restore_order_detects_missing_or_short_results():
    with pytest.raises(ValueError):
        restore_order([[0, 1]], [["x"]], 2)
    with pytest.raises(ValueError):
        restore_order([[0]], [["x"]], 2)


class Boom(Exception):
    pass


def test_call_with_halving_splits_until_it_fits():
    calls: list[int] = []

    def fn(rows: slice) -> list[int]:
        size = rows.stop - rows.start
        calls.append(size)
        if size > 2:
            raise Boom
        return list(range(rows.start, rows.stop))

    splits: list[int] = []
    assert call_with_halving(fn, 8, lambda e: isinstance(e, Boom), splits.append) == list(range(8))
    assert calls == [8, 4, 2, 2, 4, 2, 2]
    assert splits == [8, 4, 4]


def test_a_failed_attempt_is_freed_before_its_halves_run():
    """CUDA OOM: the halves ran inside the except block, where the error's traceback still held the failed
    forward's frames (and so its activations): each retry met a fuller GPU. A stand-in for the activations is
    tracked with a weak reference; every earlier attempt's must be gone when a half starts."""
    import gc
    import weakref

    class Activations:
        pass

    attempts: list[weakref.ref] = []

    def fn(rows: slice) -> list[int]:
        gc.collect()
        assert all(ref() is None for ref in attempts), "a failed attempt's memory is still held"
        activations = Activations()  # noqa: F841 - held by this frame, as a forward's tensors are
        attempts.append(weakref.ref(activations))
        if rows.stop - rows.start > 1:
            raise Boom
        return [rows.start]

    assert call_with_halving(fn, 4, lambda e: isinstance(e, Boom)) == [0, 1, 2, 3]


def test_call_with_halving_reraises_at_one_row_and_for_other_errors():
    def always(rows: slice) -> list[int]:
        raise Boom

    with pytest.raises(Boom):
        call_with_halving(always, 5, lambda e: isinstance(e, Boom))

    calls: list[int] = []

    def other(rows: slice) -> list[int]:
        calls.append(rows.stop - rows.start)
        raise KeyError("not an OOM")

    with pytest.raises(KeyError):
        call_with_halving(other, 8, lambda e: isinstance(e, Boom))
    assert calls == [8]  # no retry for errors that splitting cannot fix
    assert call_with_halving(always, 0, lambda e: True) == []


def test_unique_sequences_keeps_first_seen_order_and_maps_every_input():
    seqs = [[1, 5, 2], [1, 2], [1, 5, 2], (1, 2), [1, 9, 2]]
    distinct, inverse = unique_sequences(seqs)
    assert [list(d) for d in distinct] == [[1, 5, 2], [1, 2], [1, 9, 2]]
    assert inverse == [0, 1, 0, 1, 2]
    assert all(list(distinct[j]) == list(seqs[i]) for i, j in enumerate(inverse))
    assert unique_sequences([]) == ([], [])
