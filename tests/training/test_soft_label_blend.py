"""Blended soft labels: an ensemble teacher as the mean of several teachers' logits, over the texts all scored.

Why it matters: the student's sentiment is capped by its one teacher (dev tweets 0.879 for both); teachers trained
with other seeds err on different rows, and their mean is the cheapest better teacher on 2 CPU cores."""

import numpy as np
import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from training.distill import SoftLabelError, SoftLabels, blend_soft_labels, text_key

TEXTS = ["Acme beats estimates", "Shares fall after guidance cut", "Fed holds rates", "$ACME to the moon"]


def _teacher(name: str, texts: list[str], seed: int, max_length: int | None = 64) -> SoftLabels:
    rng = np.random.default_rng(seed)
    return SoftLabels(f"sha256:{name}", f"{name}@sha256:0", list(texts),
                      rng.normal(size=(len(texts), 3)).astype(np.float32),
                      rng.normal(size=(len(texts), 20)).astype(np.float32), max_length)


def test_the_blend_is_the_mean_of_the_logits_over_the_texts_every_teacher_scored():
    a = _teacher("a", TEXTS, 1)
    b = _teacher("b", list(reversed(TEXTS[1:])), 2).shareable(["sentiment"])  # another row order, one text missing
    blended = blend_soft_labels([a, b], ["sentiment"])
    assert blended.heads == ("sentiment",) and blended.max_length == 64 and not blended.topic.any()
    assert sorted(blended.keys) == sorted(text_key(t) for t in TEXTS[1:])
    s, _, hit = blended.lookup(TEXTS)
    assert hit.tolist() == [False, True, True, True]  # only the texts both scored
    sa, _, _ = a.lookup(TEXTS)
    sb, _, _ = b.lookup(TEXTS)
    assert np.allclose(s[1:], (sa[1:] + sb[1:]) / 2, atol=1e-6)
    assert not np.allclose(s[1:], sa[1:]) and not np.allclose(s[1:], sb[1:])
    assert blended.teacher == "mean(a@sha256:0, b@sha256:0)"
    assert blended.fingerprint != blend_soft_labels([a, _teacher("c", TEXTS, 3)], ["sentiment"]).fingerprint


def test_the_blend_refuses_what_would_teach_a_wrong_target():
    a, b = _teacher("a", TEXTS, 1), _teacher("b", TEXTS, 2)
    with pytest.raises(SoftLabelError, match="cannot teach the topic head"):
        blend_soft_labels([a, b.shareable(["sentiment"])], ["topic"])  # zeros would pull the mean to uniform
    with pytest.raises(SoftLabelError, match="different token limits"):
        blend_soft_labels([a, _teacher("c", TEXTS, 3, max_length=128)], ["sentiment"])
    with pytest.raises(SoftLabelError, match="at least two"):
        blend_soft_labels([a], ["sentiment"])
    with pytest.raises(SoftLabelError, match="heads must be"):
        blend_soft_labels([a, b], [])


def test_blend_labels_command_writes_a_file_train_can_read_and_explains_a_refusal(tmp_path):
    a = _teacher("a", TEXTS, 1).shareable(["sentiment"]).save(tmp_path / "a.npz")
    b = _teacher("b", TEXTS, 2).save(tmp_path / "soft-labels-b.npz")  # a cache file with texts blends too
    out = tmp_path / "mean.npz"
    result = CliRunner().invoke(cli, ["teacher", "blend-labels", str(out), str(a), str(b), "--head", "sentiment"])
    assert result.exit_code == 0, result.output
    assert "4 texts scored by all 2 teachers (of 4, 4), heads sentiment" in result.output
    loaded = SoftLabels.load(out)
    assert loaded.heads == ("sentiment",) and len(loaded.keys) == 4
    assert not any(t.encode() in out.read_bytes() for t in TEXTS)
    result = CliRunner().invoke(cli, ["teacher", "blend-labels", str(out), str(a), str(b), "--head", "topic"])
    assert result.exit_code == 1 and "cannot teach the topic head" in result.output
