"""Shareable soft labels: a teacher's logits without the dataset texts, per head, usable in place of the teacher.

Why it matters: the two mpnet teachers and their scoring passes cost ~2 h of CPU, more than is left after them in
one session; their logits (not their texts) can be kept and a student distilled later from them alone."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from training.config import TrainConfig
from training.distill import SoftLabelError, SoftLabels, text_key

TEXTS = ["Acme beats estimates", "Shares fall after guidance cut", "Fed holds rates", "$ACME to the moon"]


def _labels(seed: int = 0) -> SoftLabels:
    rng = np.random.default_rng(seed)
    return SoftLabels("sha256:abc", "tiny-teacher@sha256:def", sorted(TEXTS),
                      rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 20)).astype(np.float32), 64)


def test_a_shareable_copy_holds_no_text_and_looks_up_the_same_logits(tmp_path):
    labels = _labels()
    path = labels.shareable(["topic"]).save(tmp_path / "topic.npz")
    with np.load(path, allow_pickle=False) as data:  # no pickled object array: no text inside
        assert "texts" not in data.files and data["keys"].shape == (4, 16)
        assert json.loads(str(data["meta"]))["heads"] == ["topic"]
    assert not any(t.encode() in path.read_bytes() for t in TEXTS)
    shared = SoftLabels.load(path)
    query = ["Fed holds rates", "never seen", "$ACME to the moon"]
    s0, t0, hit0 = labels.lookup(query)
    s1, t1, hit1 = shared.lookup(query)
    assert hit1.tolist() == hit0.tolist() == [True, False, True]
    assert np.array_equal(t1, t0) and t1[0].any()
    assert not s1.any()  # the dropped head is not carried
    assert shared.fingerprint == labels.fingerprint and shared.teacher == labels.teacher and shared.max_length == 64
    shared.require("topic", path)
    with pytest.raises(SoftLabelError, match="cannot teach the sentiment head"):
        shared.require("sentiment", path)
    assert text_key("Fed holds rates") in shared.keys and text_key("fed holds rates") not in shared.keys


def test_a_shareable_copy_of_a_shareable_copy_keeps_its_keys_and_narrows_heads(tmp_path):
    both = SoftLabels.load(_labels().shareable().save(tmp_path / "both.npz"))
    assert both.heads == ("sentiment", "topic")
    sentiment = both.shareable(["sentiment"])
    assert sentiment.keys == both.keys and sentiment.heads == ("sentiment",) and not sentiment.topic.any()
    assert sentiment.shareable(["topic"]).heads == ()  # a head it never had does not come back
    with pytest.raises(SoftLabelError):
        both.shareable(["sentimnet"])


def test_config_takes_one_source_per_teacher_and_a_topic_file_alone_distils_topic(tmp_path):
    base = {"data_path": tmp_path, "output_dir": tmp_path / "o"}
    alone = TrainConfig(**base, topic_soft_labels=tmp_path / "t.npz")
    assert alone.kd_heads == ("topic",) and alone.distilled and not alone.teaches_both_heads
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(**base, topic_teacher=tmp_path, topic_soft_labels=tmp_path / "t.npz")
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(**base, teacher=tmp_path, soft_labels=tmp_path / "s.npz")


def test_share_labels_command_writes_a_copy_and_refuses_a_foreign_file(tmp_path):
    source = _labels().save(tmp_path / "soft-labels-x.npz")
    out = tmp_path / "shared" / "topic.npz"
    result = CliRunner().invoke(cli, ["teacher", "share-labels", str(source), str(out), "--head", "topic"])
    assert result.exit_code == 0, result.output
    assert "4 texts, heads topic" in result.output and SoftLabels.load(out).heads == ("topic",)
    foreign = tmp_path / "foreign.npz"
    foreign.write_bytes(b"not an npz")
    result = CliRunner().invoke(cli, ["teacher", "share-labels", str(foreign), str(out)])
    assert result.exit_code == 1 and "not a soft-label file" in result.output
