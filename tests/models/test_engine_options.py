"""Engine options: calibrated temperatures, concurrent ONNX sessions, ONNX-only artifacts on a GPU image."""

import dataclasses

import numpy as np
import pytest

from models.engine import Engine, load_engine, softmax
from models.export import slim_copy

TEXTS = ["Fed hikes rates by 75bp", "Acme shares plunge after profit warning", "word " * 90,
         "Stocks rally as inflation cools", "Company to hold annual meeting"] * 7


def test_temperatures_change_probabilities_not_labels(onnx_engine):
    info = dataclasses.replace(onnx_engine.info, temperatures={"sentiment": 2.5, "topic": 0.5})
    # same micro-batches on both sides (dynamic int8 scales activations per batch, see below)
    hot = Engine(onnx_engine.encoder, onnx_engine.runner, info, batch_size=onnx_engine.batch_size,
                 max_padding=onnx_engine.max_padding)
    s_logits, t_logits = onnx_engine.predict_logits(TEXTS)
    s_prob, t_prob = hot.predict_proba(TEXTS)
    cols = onnx_engine._sentiment_columns
    np.testing.assert_allclose(s_prob, softmax(s_logits / 2.5)[:, cols], atol=1e-9)
    np.testing.assert_allclose(t_prob, softmax(t_logits / 0.5), atol=1e-9)
    assert [p.sentiment for p in hot.classify(TEXTS)] == [p.sentiment for p in onnx_engine.classify(TEXTS)]
    assert [p.topic for p in hot.classify(TEXTS)] == [p.topic for p in onnx_engine.classify(TEXTS)]


def test_several_sessions_give_the_same_results(artifact_dir):
    # Same micro-batches on both sides: dynamic int8 scales activations per batch tensor, so batch
    # composition (not the session count) moves probabilities by ~1e-2.
    multi = load_engine(artifact_dir, device="cpu", backend="onnx", threads=2, sessions=2, batch_size=4)
    single = load_engine(artifact_dir, device="cpu", backend="onnx", threads=1, batch_size=4)
    assert multi.describe()["sessions"] == 2
    got, want = multi.predict_proba(TEXTS), single.predict_proba(TEXTS)
    for task in (0, 1):
        np.testing.assert_allclose(got[task], want[task], atol=1e-5)
    with pytest.raises(ValueError, match="sessions"):
        load_engine(artifact_dir, device="cpu", sessions=0)


def test_onnx_only_artifact_under_the_gpu_image_settings(artifact_dir, tmp_path):
    """An ONNX-only artifact (the bundled model) with device/backend auto serves on CPU; an explicit
    cuda/torch request on a machine without a GPU fails with one clear line."""
    slim = slim_copy(artifact_dir, tmp_path / "slim")
    engine = load_engine(slim, device="auto", backend="auto", threads=1)
    assert engine.backend == "onnx" and engine.runner.device == "cpu"
    from models.devices import cuda_available

    if not cuda_available():
        with pytest.raises(RuntimeError) as info:
            load_engine(slim, device="cuda", backend="torch")
        assert "no CUDA device" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="ONNX-only"):
        load_engine(slim, device="cpu", backend="torch")


def test_fp16_weights_serve_the_torch_path(artifact_dir, tmp_path, torch_engine):
    import shutil

    from safetensors.torch import load_file, save_file

    half = tmp_path / "fp16"
    shutil.copytree(artifact_dir, half, ignore=shutil.ignore_patterns("*.onnx", "model.safetensors"))
    state = load_file(str(artifact_dir / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(half / "model.fp16.safetensors"))
    engine = load_engine(half, device="cpu", backend="auto", threads=1)
    assert engine.backend == "torch"
    got, want = engine.predict_proba(TEXTS[:5]), torch_engine.predict_proba(TEXTS[:5])
    np.testing.assert_allclose(got[0], want[0], atol=2e-2)


def _dockerfile_env(path):
    import re

    text = path.read_text().replace("\\\n", " ")
    return dict(re.findall(r"(MARKETMOOD_MODEL__\w+)=(\S+)", text))


def test_the_cuda_image_settings_start_with_the_bundled_model_on_this_machine():
    """docker/Dockerfile.cuda's exact model settings, applied to the bundled (ONNX-only) model here."""
    from pathlib import Path

    from models.artifact import BUNDLED_MODEL_DIR, read_info

    dockerfile = Path(__file__).resolve().parents[2] / "docker" / "Dockerfile.cuda"
    if not dockerfile.is_file() or not (BUNDLED_MODEL_DIR / "artifact.json").is_file():
        pytest.skip("no Dockerfile.cuda or bundled model in this checkout")
    env = _dockerfile_env(dockerfile)
    engine = load_engine(device=env.get("MARKETMOOD_MODEL__DEVICE", "auto"),
                         backend=env.get("MARKETMOOD_MODEL__BACKEND", "auto"), threads=1)
    # the bundled model has only the int8 export: on this CPU host auto/auto must resolve to ONNX on the CPU
    assert (engine.backend, engine.model_version) == ("onnx", read_info(BUNDLED_MODEL_DIR).version)
    assert engine.classify(["Fed raises rates"])[0].model_version == engine.model_version


class CountingRunner:
    """Wraps a real runner and records the shape of every batch it is given."""

    def __init__(self, runner):
        self.runner, self.device, self.precision, self.shapes = runner, runner.device, runner.precision, []

    def __call__(self, ids, mask):
        self.shapes.append(ids.shape)
        return self.runner(ids, mask)


def test_max_padding_cuts_batches_without_changing_fp32_results(torch_engine):
    """fp32 torch is exact about padding: cutting batches may only change how much padding is computed."""
    texts = [" ".join(["stocks"] * n) for n in (40, 3, 38, 20, 2, 21, 39, 1)]
    loose = CountingRunner(torch_engine.runner)
    tight = CountingRunner(torch_engine.runner)
    common = dict(batch_size=8, backend="torch")
    want = Engine(torch_engine.encoder, loose, torch_engine.info, max_padding=None, **common).predict_logits(texts)
    got = Engine(torch_engine.encoder, tight, torch_engine.info, max_padding=0.1, **common).predict_logits(texts)
    for task in (0, 1):
        np.testing.assert_allclose(got[task], want[task], atol=1e-4)
    assert loose.shapes == [(8, 42)]
    assert tight.shapes == [(3, 42), (2, 23), (1, 5), (1, 4), (1, 3)]  # [CLS] + words + [SEP]
    padded = sum(r * w for r, w in tight.shapes)
    assert padded < 0.6 * loose.shapes[0][0] * loose.shapes[0][1]  # 184 of 336 padded tokens


def test_load_engine_max_padding_defaults_and_errors(artifact_dir):
    assert load_engine(artifact_dir, device="cpu", threads=1).max_padding == 0.1
    assert load_engine(artifact_dir, device="cpu", threads=1, max_padding="off").max_padding is None
    with pytest.raises(ValueError, match="max_padding"):
        load_engine(artifact_dir, device="cpu", threads=1, max_padding=1.0)


def test_repeated_texts_are_scored_once_and_identically(torch_engine):
    """A stream batch repeats headlines (one per ticker, retweets): each distinct text reaches the runner
    once, every copy gets the same scores, and the results equal scoring the distinct texts alone."""
    distinct = ["Fed hikes rates by 75bp", "Acme shares plunge after profit warning", "Oil steady"]
    texts = [distinct[i] for i in (0, 1, 0, 2, 1, 0)]
    counting = CountingRunner(torch_engine.runner)
    engine = Engine(torch_engine.encoder, counting, torch_engine.info, batch_size=8, backend="torch")
    sentiment, topic = engine.predict_logits(texts)
    assert sum(rows for rows, _ in counting.shapes) == 3
    want_s, want_t = torch_engine.predict_logits(distinct)
    for row, i in enumerate((0, 1, 0, 2, 1, 0)):
        np.testing.assert_allclose(sentiment[row], want_s[i], atol=1e-4)
        np.testing.assert_allclose(topic[row], want_t[i], atol=1e-4)
    assert np.array_equal(sentiment[0], sentiment[2]) and np.array_equal(sentiment[0], sentiment[5])
    predictions = engine.classify(texts)
    assert predictions[1] == predictions[4] and len(predictions) == 6


def test_auto_sessions_split_the_threads_up_to_two():
    from models.engine import AUTO_SESSIONS_MAX, resolve_sessions

    assert [resolve_sessions("auto", threads) for threads in (1, 2, 3, 16)] == [1, 2, 2, AUTO_SESSIONS_MAX]
    assert resolve_sessions(3, 2) == 3  # an explicit number is taken as given
    with pytest.raises(ValueError, match="sessions"):
        resolve_sessions(0, 2)


def test_a_lone_batch_is_cut_into_one_piece_per_session(artifact_dir):
    """Single-thread sessions: one micro-batch of 5 rows runs as pieces of 3 and 2 rows side by side, each trimmed to
    its own longest row, and comes back as one result in row order (a lone single row runs as is)."""
    from models.artifact import ONNX_INT8_FILE
    from models.batching import pad_batch
    from models.onnx_backend import OnnxRunner

    runner = OnnxRunner(artifact_dir / ONNX_INT8_FILE, threads=2, sessions=2)
    rows = [[101, 2000 + i] + [3000 + i] * (12 - 2 * i) + [102] for i in range(5)]  # lengths 15, 13, ..., 7
    ids, mask = pad_batch(rows)
    [(sentiment, topic)] = runner.run_many([(ids, mask)])
    first = runner(*pad_batch(rows[:3]))
    second = runner(*pad_batch(rows[3:]))
    assert pad_batch(rows[3:])[0].shape[1] < ids.shape[1]  # the second piece is narrower than the batch
    np.testing.assert_allclose(sentiment, np.concatenate([first[0], second[0]]), atol=1e-6)
    np.testing.assert_allclose(topic, np.concatenate([first[1], second[1]]), atol=1e-6)
    [(one, _)] = runner.run_many([pad_batch(rows[:1])])
    np.testing.assert_allclose(one, runner(*pad_batch(rows[:1]))[0], atol=1e-6)
