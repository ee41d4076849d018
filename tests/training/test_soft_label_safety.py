"""Soft-label files are never unpickled: a crafted .npz runs no code; a fresh cache file round-trips without pickle.

Why: a cache file, a shared copy or a blend can come from another machine; ``np.load(allow_pickle=True)`` on a
pickled ``texts`` array would run whatever its ``__reduce__`` names."""

import builtins
import json

import numpy as np
import pytest

from training.distill import LegacyCacheError, SoftLabelError, SoftLabels, _reusable_scores

FLAG = "_marketmood_soft_label_payload_ran"


class Payload:
    """Unpickling this runs ``exec``: it sets a flag on ``builtins`` (any code could run in its place)."""

    def __reduce__(self):
        return exec, (f"import builtins; builtins.{FLAG} = True",)


@pytest.fixture
def crafted(tmp_path):
    if hasattr(builtins, FLAG):
        delattr(builtins, FLAG)
    path = tmp_path / "soft-labels-crafted.npz"
    meta = {"fingerprint": "sha256:x", "teacher": "t@sha256:y", "version": 1, "max_length": None,
            "heads": ["sentiment", "topic"]}
    np.savez(path, sentiment=np.zeros((1, 3), np.float32), topic=np.zeros((1, 20), np.float32),
             meta=np.array(json.dumps(meta)), texts=np.array([Payload()], dtype=object))
    yield path
    if hasattr(builtins, FLAG):
        delattr(builtins, FLAG)


def test_a_pickled_texts_array_is_refused_and_never_unpickled(crafted):
    with pytest.raises(LegacyCacheError, match="delete it, it will be recomputed"):
        SoftLabels.load(crafted)
    assert not hasattr(builtins, FLAG)
    assert issubclass(LegacyCacheError, SoftLabelError)  # the CLI's `not a soft-label file` handling catches it


def test_scanning_a_cache_folder_skips_a_pickled_file_without_running_it(crafted):
    assert _reusable_scores(crafted.parent, "t@sha256:y", None, {"some text"}) == {}
    assert not hasattr(builtins, FLAG)


def test_a_fresh_cache_file_round_trips_without_pickle(tmp_path):
    texts = ["Acme beats estimates", "", "naïve café 🚀 $ACME", "trailing nul\x00", "quote \" and \\ backslash"]
    rng = np.random.default_rng(0)
    labels = SoftLabels("sha256:abc", "t@sha256:def+onnx-cpu-int8", texts, rng.normal(size=(5, 3)).astype(np.float32),
                        rng.normal(size=(5, 20)).astype(np.float32), 64)
    path = labels.save(tmp_path / "cache.npz")
    with np.load(path, allow_pickle=False) as data:  # every array readable without pickle
        for name in data.files:
            assert data[name].dtype != object, name
    loaded = SoftLabels.load(path)
    assert loaded.texts == texts and loaded.keys is None and loaded.heads == labels.heads
    assert np.array_equal(loaded.sentiment, labels.sentiment) and np.array_equal(loaded.topic, labels.topic)
    assert (loaded.fingerprint, loaded.teacher, loaded.max_length) == (labels.fingerprint, labels.teacher, 64)
    s, _, hit = loaded.lookup(["naïve café 🚀 $ACME", "trailing nul"])
    assert hit.tolist() == [True, False] and np.array_equal(s[0], labels.sentiment[2])


def test_a_plain_unicode_texts_array_still_loads(tmp_path):
    path = tmp_path / "unicode.npz"
    meta = {"fingerprint": "sha256:x", "teacher": "t", "version": 1, "max_length": None}
    np.savez(path, sentiment=np.ones((2, 3), np.float32), topic=np.ones((2, 20), np.float32),
             meta=np.array(json.dumps(meta)), texts=np.array(["a", "b"]))
    assert SoftLabels.load(path).texts == ["a", "b"]


def test_the_committed_shareable_files_still_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "soft-labels"
    files = sorted(folder.glob("*.npz"))
    if not files:
        pytest.skip("no committed soft-label files in this checkout")
    for path in files:
        labels = SoftLabels.load(path)
        assert labels.keys is not None and not labels.texts and len(labels.keys) == len(labels.sentiment), path.name
