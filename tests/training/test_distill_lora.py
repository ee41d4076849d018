"""Distillation (soft-label cache, KD loss path) and LoRA (adapters merged before export) on tiny runs."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models import load_engine
from models.artifact import TRAINING_CONFIG_FILE, WEIGHTS_FILE
from training.config import TrainConfig
from training.distill import SoftLabels, teacher_soft_labels
from training.loss import IGNORE, distillation_loss, student_loss
from training.trainer import train


def _config(data, out, **kw):
    return TrainConfig(data_path=data, output_dir=out, epochs=1, max_steps=3, batch_size=16, limit_per_dataset=24,
                       max_length=32, threads=1, export_onnx=False, **kw)


@pytest.fixture(scope="module")
def data_with_streams(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("streams") / "data"
    shutil.copytree(tiny_data, root)
    (root / "reuters_news_stream").mkdir()
    with gzip.open(root / "reuters_news_stream/reuters_news_2011_2018.train.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write("article_id,published_date,ticker,company,headline,summary,news_type,source\n")
        for i in range(30):
            fh.write(f"{i},2012-01-01,ACM,Acme,Acme headline number {i} on markets,s,normal,Reuters\n")
    return root


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory):
    return train(_config(tiny_data, tmp_path_factory.mktemp("teacher") / "t", version="tiny-teacher"), progress=False)


def test_kd_loss_is_zero_when_student_matches_teacher_and_masks_rows():
    logits = torch.randn(4, 3)
    has = torch.tensor([True, True, False, False])
    assert distillation_loss(logits, logits, has, 2.0).abs() < 1e-6
    other = logits.clone()
    other[2:] += 5  # rows without a teacher must not count
    assert distillation_loss(logits, other, has, 2.0).abs() < 1e-6
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 20, requires_grad=True)
    labels = {"sentiment": torch.tensor([0, 1, IGNORE, IGNORE]), "topic": torch.tensor([IGNORE, IGNORE, IGNORE, IGNORE])}
    loss = student_loss({"sentiment": s, "topic": t}, labels, torch.ones(4),
                        teacher={"sentiment": torch.randn(4, 3), "topic": torch.randn(4, 20)},
                        has_teacher=torch.tensor([False, False, True, True]), alpha=0.5)
    loss.backward()
    assert torch.any(t.grad[2:] != 0) and torch.all(t.grad[:2] == 0)  # unlabeled rows learn only from the teacher
    s.grad = t.grad = None
    sentiment_only = student_loss({"sentiment": s, "topic": t}, labels, torch.ones(4),
                                  teacher={"sentiment": torch.randn(4, 3), "topic": torch.randn(4, 20)},
                                  has_teacher=torch.tensor([False, False, True, True]), alpha=0.5,
                                  kd_heads=("sentiment",))
    sentiment_only.backward()
    assert t.grad is None or torch.all(t.grad == 0)  # --kd-head sentiment: the topic head learns nothing from it
    assert torch.any(s.grad[2:] != 0)


def test_kd_unlabeled_only_keeps_the_teacher_off_gold_labeled_rows_of_that_head():
    torch.manual_seed(0)
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 20, requires_grad=True)
    labels = {"sentiment": torch.tensor([0, IGNORE, IGNORE, IGNORE]), "topic": torch.tensor([IGNORE, 5, IGNORE, IGNORE])}
    teacher = {"sentiment": torch.randn(4, 3), "topic": torch.randn(4, 20)}
    everywhere = torch.ones(4, dtype=torch.bool)
    # alpha = 1: no gold term, so any gradient on a row comes from the teacher
    student_loss({"sentiment": s, "topic": t}, labels, torch.ones(4), teacher=teacher, has_teacher=everywhere,
                 alpha=1.0, kd_unlabeled_only=("topic",)).backward()
    assert torch.all(t.grad[1] == 0)  # row 1 has a gold topic: the topic teacher does not teach it
    assert torch.all(t.grad[[0, 2, 3]].abs().sum(-1) > 0)  # sentiment-labeled and unlabeled rows still learn topic
    assert torch.all(s.grad.abs().sum(-1) > 0)  # the sentiment head is distilled on every row, its gold row included
    t.grad = None
    student_loss({"sentiment": s, "topic": t}, labels, torch.ones(4), teacher=teacher, has_teacher=everywhere,
                 alpha=1.0).backward()
    assert torch.any(t.grad[1] != 0)  # without the option the teacher does teach the gold row


def test_kd_unlabeled_only_must_name_a_distilled_head(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="kd_unlabeled_only"):
        _config(tiny_data, tmp_path / "x", soft_labels=tmp_path / "s.npz", kd_heads=("sentiment",),
                kd_unlabeled_only=("topic",))


def test_student_distils_from_a_teacher_and_reuses_the_cache(data_with_streams, teacher, tmp_path):
    cache = tmp_path / "cache"
    records = []
    for name in ("first", "second"):
        out = train(_config(data_with_streams, tmp_path / name, teacher=teacher, soft_label_cache=cache,
                            unlabeled_per_stream=10, version=f"student-{name}"), progress=False)
        records.append(json.loads((out / TRAINING_CONFIG_FILE).read_text())["distillation"])
    assert records[0]["reused"] is False and records[1]["reused"] is True
    assert records[0]["fingerprint"] == records[1]["fingerprint"] and len(list(cache.glob("*.npz"))) == 1
    assert records[0]["transfer_texts"] == 10 and records[0]["rows_with_teacher"] > 10
    # the cache file (what --soft-labels takes) holds both heads' logits for every transfer text
    labels = SoftLabels.load(Path(records[0]["cache"]))
    assert labels.fingerprint == records[0]["fingerprint"] and labels.topic.shape[1] == 20
    s, t, hit = labels.lookup([labels.texts[0], "never seen"])
    assert hit.tolist() == [True, False] and s.shape == (2, 3) and not t[1].any()


def test_a_student_is_the_same_whether_its_teacher_scored_in_the_run_or_came_from_a_file(data_with_streams, teacher,
                                                                                        tmp_path):
    """Scoring the teacher builds a model and must not move the student's random streams: the bundled model,
    distilled while its teacher scored, once differed from the same run read from its cache (first loss 1.8819 vs
    1.8732; BENCHMARKS, "The bundled model's teacher found")."""
    cache = tmp_path / "cache"
    runs = {}
    for name, source in (("scored", {"teacher": teacher}), ("cached", {"teacher": teacher}), ("file", None)):
        if source is None:
            shared = SoftLabels.load(Path(runs["scored"]["distillation"]["cache"])).shareable(["sentiment", "topic"])
            source = {"soft_labels": shared.save(tmp_path / "shared.npz")}
        out = train(_config(data_with_streams, tmp_path / name, soft_label_cache=cache, unlabeled_per_stream=10,
                            version="student", **source), progress=False)
        runs[name] = json.loads((out / TRAINING_CONFIG_FILE).read_text())
    assert runs["scored"]["distillation"]["scored_now"] > 10 and runs["cached"]["distillation"]["reused"] is True
    # the first step's loss (dropout, the first batch) and the selection score after all steps (the weights)
    outcome = {name: (run["history"]["train_loss"][0], run["history"]["epochs"][0]["selection_score"])
               for name, run in runs.items()}
    assert outcome["scored"] == outcome["cached"] == outcome["file"]


def test_a_larger_transfer_set_scores_only_its_new_texts(data_with_streams, teacher, tmp_path):
    cache, fresh_cache = tmp_path / "cache", tmp_path / "fresh"
    cache.mkdir()
    (cache / "soft-labels-torn.npz").write_bytes(b"cut off mid-write")  # skipped, not fatal
    records = []
    for per_stream in (10, 20):
        out = train(_config(data_with_streams, tmp_path / f"u{per_stream}", teacher=teacher, soft_label_cache=cache,
                            unlabeled_per_stream=per_stream, version=f"student-u{per_stream}"), progress=False)
        records.append(json.loads((out / TRAINING_CONFIG_FILE).read_text())["distillation"])
    first, second = records
    assert first["reused"] is False and first["scored_now"] == first["rows_with_teacher"] > 10
    # the first 10 headlines of the seeded sample are a prefix of the first 20: only the other 10 are new
    assert second["reused"] is False and second["scored_now"] == 10 and second["transfer_texts"] == 20
    assert second["fingerprint"] != first["fingerprint"] and len(list(cache.glob("*.npz"))) == 3
    # the merged file equals a from-scratch scoring of the same texts (fp32 teacher: up to float noise)
    merged = SoftLabels.load(Path(second["cache"]))
    fresh, _, scored = teacher_soft_labels(teacher, merged.texts, fresh_cache, progress=False)
    assert scored == len(merged.texts) and fresh.fingerprint == merged.fingerprint and fresh.texts == merged.texts
    assert np.allclose(fresh.sentiment, merged.sentiment, atol=1e-4)
    assert np.allclose(fresh.topic, merged.topic, atol=1e-4)
    # another teacher's scores are never borrowed
    other = tmp_path / "other-teacher"
    shutil.copytree(teacher, other)
    info = json.loads((other / "artifact.json").read_text())
    (other / "artifact.json").write_text(json.dumps({**info, "version": "another-teacher"}))
    _, _, scored = teacher_soft_labels(other, merged.texts, cache, progress=False)
    assert scored == len(merged.texts)


def test_lora_trains_adapters_and_exports_a_plain_model(tiny_data, tmp_path):
    out = train(_config(tiny_data, tmp_path, lora=True, lora_r=4, version="lora"), progress=False)
    record = json.loads((out / TRAINING_CONFIG_FILE).read_text())
    assert 0 < record["lora"]["trainable"] < 0.2 * record["lora"]["total"]
    from safetensors.torch import load_file

    keys = load_file(str(out / WEIGHTS_FILE)).keys()
    assert not [k for k in keys if "lora" in k or "base_model" in k]  # merged: plain architecture
    (prediction,) = load_engine(out, backend="torch", device="cpu").classify(["Acme shares plunge"])
    assert prediction.model_version == "lora"


@pytest.fixture(scope="module")
def topic_teacher(tiny_data, tmp_path_factory):
    return train(_config(tiny_data, tmp_path_factory.mktemp("topic-teacher") / "t", version="tiny-topic-teacher",
                         init_seed=7), progress=False)


def test_a_topic_teacher_gives_the_topic_head_and_the_first_teacher_the_sentiment_head(
        data_with_streams, teacher, topic_teacher, tmp_path):
    from training.trainer import _attach_soft_labels

    cache = tmp_path / "cache"
    config = _config(data_with_streams, tmp_path / "s", teacher=teacher, topic_teacher=topic_teacher,
                     soft_label_cache=cache)
    texts = ["Acme beats estimates", "Shares fall after guidance cut", "Fed holds rates"]

    class Rows:  # the three arrays _attach_soft_labels fills
        teacher_sentiment = teacher_topic = has_teacher = None

    rows = Rows()
    record = _attach_soft_labels(config, rows, texts, progress=False)
    first, _, _ = teacher_soft_labels(teacher, texts, tmp_path / "a", progress=False)
    second, _, _ = teacher_soft_labels(topic_teacher, texts, tmp_path / "b", progress=False)
    assert not np.allclose(first.topic, second.topic, atol=1e-3)  # two different teachers, or the test proves nothing
    order = [first.texts.index(t) for t in texts]
    assert np.allclose(rows.teacher_sentiment, first.sentiment[order], atol=1e-4)
    assert np.allclose(rows.teacher_topic, second.topic[[second.texts.index(t) for t in texts]], atol=1e-4)
    assert rows.has_teacher.all() and record["rows_with_teacher"] == 3
    assert record["teacher"] == first.teacher and record["topic_teacher"]["teacher"] == second.teacher
    assert len(list(cache.glob("*.npz"))) == 2  # one cache per teacher


def test_a_topic_teacher_alone_distils_only_the_topic_head(data_with_streams, topic_teacher, tmp_path):
    out = train(_config(data_with_streams, tmp_path / "s", topic_teacher=topic_teacher, unlabeled_per_stream=10,
                        soft_label_cache=tmp_path / "cache", version="student-topic-kd", kd_unlabeled_only=("topic",)),
                progress=False)
    record = json.loads((out / TRAINING_CONFIG_FILE).read_text())
    assert record["config"]["kd_heads"] == ["topic"] and record["config"]["topic_teacher"] == str(topic_teacher)
    distillation = record["distillation"]
    assert distillation["heads"] == ["topic"] and distillation["transfer_texts"] == 10
    assert distillation["unlabeled_only"] == ["topic"]
    assert "heads topic (topic only on rows without its gold label)" in (out / "MODEL_CARD.md").read_text()
    assert distillation["teacher"].startswith("tiny-topic-teacher@")
    with pytest.raises(ValueError, match="only a topic teacher"):
        _config(data_with_streams, tmp_path / "bad", topic_teacher=topic_teacher, kd_heads=("sentiment", "topic"))


def test_shareable_soft_labels_stand_in_for_both_teachers(data_with_streams, teacher, topic_teacher, tmp_path):
    """Distilling from the two teachers' shareable files (no texts, one head each) fills the same logits as the
    teachers themselves; a file without the head asked of it is refused, not read as zeros."""
    from training.distill import SoftLabelError
    from training.trainer import _attach_soft_labels

    texts = ["Acme beats estimates", "Shares fall after guidance cut", "Fed holds rates"]

    class Rows:  # the three arrays _attach_soft_labels fills
        teacher_sentiment = teacher_topic = has_teacher = None

    by_teachers, by_files = Rows(), Rows()
    _attach_soft_labels(_config(data_with_streams, tmp_path / "a", teacher=teacher, topic_teacher=topic_teacher,
                                soft_label_cache=tmp_path / "cache"), by_teachers, texts, progress=False)
    caches = {SoftLabels.load(p).teacher.split("@")[0]: SoftLabels.load(p) for p in (tmp_path / "cache").glob("*.npz")}
    sentiment_file = caches["tiny-teacher"].shareable(["sentiment"]).save(tmp_path / "shared/sentiment.npz")
    topic_file = caches["tiny-topic-teacher"].shareable(["topic"]).save(tmp_path / "shared/topic.npz")
    record = _attach_soft_labels(_config(data_with_streams, tmp_path / "b", soft_labels=sentiment_file,
                                         topic_soft_labels=topic_file), by_files, texts + ["not scored"], progress=False)
    assert np.array_equal(by_files.teacher_sentiment[:3], by_teachers.teacher_sentiment)
    assert np.array_equal(by_files.teacher_topic[:3], by_teachers.teacher_topic)
    assert by_files.has_teacher.tolist() == [True, True, True, False] and record["rows_with_teacher"] == 3
    assert record["topic_teacher"]["teacher"].startswith("tiny-topic-teacher@") and record["teacher"].startswith("tiny-teacher@")
    with pytest.raises(SoftLabelError, match="cannot teach the topic head"):  # sentiment-only file, both heads asked
        _attach_soft_labels(_config(data_with_streams, tmp_path / "c", soft_labels=sentiment_file), Rows(), texts,
                            progress=False)
    with pytest.raises(SoftLabelError, match="cannot teach the topic head"):  # files swapped
        _attach_soft_labels(_config(data_with_streams, tmp_path / "d", soft_labels=topic_file,
                                    topic_soft_labels=sentiment_file, kd_heads=("topic",)), Rows(), texts,
                            progress=False)
