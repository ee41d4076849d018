"""The engine end to end on a real (untrained) artifact: order, bad inputs, truncation, OOM retry, footprint."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from models.engine import Engine, load_engine, resolve_max_length
from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from models.prediction import Classifier, InvalidTextError
from models.torch_backend import TorchRunner

from tests.models.conftest import TEST_MAX_LENGTH, TEST_VERSION

MIXED = [
    "Fed hikes rates",
    "Apple shares jump 5% after earnings beat estimates and guidance raised for the holiday quarter",
    "Oil slumps",
    "Microsoft to acquire Activision Blizzard for $68.7 billion in the biggest gaming deal ever",
    "Gold up",
    "Treasury yields climb to a 16-year high as investors dump bonds",
    "$AAPL",
    "ECB keeps rates unchanged",
]


class EchoRunner:
    """Deterministic stand-in for a device: logits are a function of each row's own tokens only."""

    device = "cpu"
    precision = "fake"

    def __init__(self) -> None:
        self.widths: list[int] = []

    def __call__(self, ids: np.ndarray, mask: np.ndarray):
        self.widths.append(ids.shape[1])
        length = mask.sum(axis=1).astype(np.float32)
        first = ids[:, 1].astype(np.float32)
        sentiment = np.stack([length, -length, first / 1000], axis=1)
        topic = np.zeros((len(ids), len(TOPIC_LABELS)), np.float32)
        topic[np.arange(len(ids)), length.astype(int) % len(TOPIC_LABELS)] = 5
        return sentiment, topic


def test_engine_is_a_classifier_with_the_artifact_version(onnx_engine):
    assert isinstance(onnx_engine, Classifier)
    assert onnx_engine.model_version == TEST_VERSION
    assert onnx_engine.max_length == TEST_MAX_LENGTH
    assert onnx_engine.topic_labels == list(TOPIC_LABELS)
    assert onnx_engine.describe()["backend"] == "onnx"


def test_micro_batches_are_padded_to_their_own_longest_text_and_results_keep_input_order(onnx_engine):
    runner = EchoRunner()
    engine = Engine(onnx_engine.encoder, runner, onnx_engine.info, batch_size=3)
    lengths = [len(ids) for ids in engine.preprocess(MIXED)]
    sentiment_logits, topic_logits = engine.predict_logits(MIXED)
    assert sentiment_logits[:, 0].tolist() == lengths  # row i really is text i
    assert runner.widths == sorted(runner.widths, reverse=True)
    assert runner.widths[0] == max(lengths) and runner.widths[-1] < max(lengths)
    preds = engine.classify(MIXED)
    assert [p.topic for p in preds] == [TOPIC_LABELS[n % len(TOPIC_LABELS)] for n in lengths]


def test_batched_equals_one_by_one_on_torch_fp32(torch_engine):
    """Real model: padding a text inside a mixed-length batch does not change its scores."""
    batched = torch_engine.predict_proba(MIXED)
    single = [torch_engine.predict_proba([t]) for t in MIXED]
    for task in (0, 1):
        np.testing.assert_allclose(batched[task], np.concatenate([s[task] for s in single]), atol=1e-5)


def test_onnx_batched_close_to_one_by_one(onnx_engine):
    batched = onnx_engine.predict_proba(MIXED)[0]
    single = np.concatenate([onnx_engine.predict_proba([t])[0] for t in MIXED])
    assert np.abs(batched - single).max() < 0.05  # dynamic int8 scales depend a little on the batch


@pytest.mark.parametrize(
    ("texts", "index"),
    [(["ok", ""], 1), (["   "], 0), (["ok", "fine", "\n\t"], 2), (["ok", None], 1), ([3.5], 0),
     # no visible character: a zero-width space (not whitespace to Python), BOM + joiner, a control character
     (["ok", "\u200b"], 1), (["\ufeff\u200d "], 0), (["ok", "\x00\x07"], 1),
     # visible, but no word piece: replacement characters a broken feed leaves, private use, a lone combining
     # accent (each scored as the empty sequence before)
     (["ok", "\ufffd\ufffd"], 1), (["ok", "fine", "\ue000"], 2), (["\u0301"], 0)],
)
def test_bad_inputs_raise_invalid_text_error_with_index(onnx_engine, texts, index):
    with pytest.raises(InvalidTextError) as info:
        onnx_engine.classify(texts)
    assert info.value.index == index


def test_empty_request_returns_nothing(onnx_engine):
    assert onnx_engine.classify([]) == []


@pytest.mark.parametrize("engine_name", ["onnx_engine", "torch_engine"])
def test_long_non_english_and_emoji_texts_give_valid_predictions(request, engine_name):
    engine = request.getfixturevalue(engine_name)
    texts = [
        "Shares rally " * 3000,  # ~6,000 tokens: truncated to the model's limit
        "日本銀行は金融緩和を継続",
        "Deutsche Bank Aktie fällt nach Gewinnwarnung",
        "🚀🚀🚀",
        "📉",
        "\u200bOil\u200d",  # zero-width characters around a word
    ]
    assert max(len(ids) for ids in engine.preprocess(texts)) == TEST_MAX_LENGTH
    preds = engine.classify(texts)
    assert len(preds) == len(texts)
    for p in preds:
        assert p.sentiment in SENTIMENT_LABELS and p.topic in TOPIC_LABELS
        assert abs(p.p_negative + p.p_neutral + p.p_positive - 1) < 1e-6
        assert 0 <= p.topic_confidence <= 1 and -1 <= p.score <= 1
        assert p.model_version == TEST_VERSION
        assert p.probabilities[p.sentiment] == max(p.probabilities.values())


def test_max_length_override_and_cap(artifact_dir, onnx_engine):
    short = load_engine(artifact_dir, device="cpu", max_length=16)
    assert max(len(ids) for ids in short.preprocess(["word " * 100])) == 16
    assert resolve_max_length(None, onnx_engine.info, 512) == TEST_MAX_LENGTH
    assert resolve_max_length(4096, onnx_engine.info, 512) == 512
    with pytest.raises(ValueError):
        resolve_max_length(2, onnx_engine.info, 512)


def test_cuda_request_without_cuda_is_an_error(artifact_dir, monkeypatch):
    import models.engine

    monkeypatch.setattr(models.engine, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA"):
        load_engine(artifact_dir, device="cuda")


def _oom_engine(torch_engine, fits: int, batch_size: int = 8):
    """A torch engine whose device raises CUDA OOM for batches larger than ``fits`` rows."""
    model = torch_engine.runner.model
    calls: list[int] = []

    def device_forward(ids: torch.Tensor, mask: torch.Tensor):
        calls.append(len(ids))
        if len(ids) > fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return model(ids, mask)

    runner = TorchRunner(model, "cpu", forward=device_forward)
    return Engine(torch_engine.encoder, runner, torch_engine.info, batch_size=batch_size, backend="torch"), calls


def test_cuda_oom_splits_the_batch_and_retries(torch_engine):
    engine, calls = _oom_engine(torch_engine, fits=2)
    got = engine.predict_proba(MIXED)
    assert calls == [8, 4, 2, 2, 4, 2, 2]
    assert engine.runner.oom_splits == 3
    want = torch_engine.predict_proba(MIXED)
    for task in (0, 1):
        np.testing.assert_allclose(got[task], want[task], atol=1e-5)


def test_cuda_oom_on_a_single_text_is_raised(torch_engine):
    engine, calls = _oom_engine(torch_engine, fits=0, batch_size=4)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.classify(MIXED[:4])
    assert calls[:3] == [4, 2, 1]


def test_cpu_onnx_path_does_not_import_torch_and_stays_small(artifact_dir):
    """A fresh process holding the loaded default-path engine: no torch, peak RSS far below 1 GB."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from models.engine import load_engine
        from models.memory import peak_rss_mb
        engine = load_engine({str(artifact_dir)!r})
        engine.classify(["Fed hikes rates"] * 64 + ["word " * 500])
        print(json.dumps({{"backend": engine.backend, "torch": "torch" in sys.modules,
                          "transformers": "transformers" in sys.modules, "rss_mb": peak_rss_mb()}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnx"
    assert not result["torch"] and not result["transformers"]
    assert result["rss_mb"] < 1024


def test_default_path_is_the_bundled_model():
    from models.artifact import BUNDLED_MODEL_DIR, read_info

    if not (BUNDLED_MODEL_DIR / "artifact.json").is_file():
        pytest.skip("no bundled model in this checkout yet")
    engine = load_engine(device="cpu", threads=1)
    assert engine.backend == "onnx"
    assert engine.model_version == read_info(BUNDLED_MODEL_DIR).version  # the bundled one, not any artifact
    prediction = engine.classify(["Fed raises rates by 25 basis points"])[0]
    assert prediction.model_version == engine.model_version
