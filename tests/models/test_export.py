"""The artifact writer and the int8 export, checked against torch fp32 on the same texts."""

import json

import numpy as np
import onnx

from models.artifact import ONNX_FP32_FILE, ONNX_INT8_FILE, WEIGHTS_FILE, read_info
from models.engine import Engine
from models.export import slim_copy
from models.labels import label_maps
from models.onnx_backend import OnnxRunner

from tests.models.conftest import TEST_VERSION

SAMPLES = [
    "Fed hikes rates by 75 basis points, signals more to come",
    "Apple shares jump 5% after earnings beat estimates",
    "Oil slumps as OPEC+ agrees to raise output",
    "Tesla recalls 2 million vehicles over Autopilot concerns",
    "Goldman Sachs upgrades Nvidia to buy, raises price target",
    "Treasury yields climb to 16-year high as investors dump bonds",
    "Bitcoin falls below $20,000 for the first time since 2020",
    "Microsoft to acquire Activision Blizzard for $68.7 billion",
    "ECB keeps rates unchanged, Lagarde says inflation still too high",
    "Gold hits record as dollar weakens",
    "Company X names new CFO",
    "Dividend raised 10% at Procter & Gamble",
    "$AAPL",
    "Markets wrap: stocks mixed ahead of jobs report",
    "La Bourse de Paris termine en hausse de 1,2%",
    "Deutsche Bank Aktie fällt nach Gewinnwarnung 📉",
    "日本銀行は金融緩和を継続",
    "🚀🚀🚀 to the moon",
    "Earnings season " * 60,
    "IPO of Arm Holdings priced at top of range",
]


def test_artifact_layout(artifact_dir):
    info = read_info(artifact_dir)
    assert info.version == TEST_VERSION
    assert info.labels == label_maps()
    config = json.loads((artifact_dir / "encoder_config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    assert (artifact_dir / "tokenizer" / "tokenizer.json").is_file()
    assert (artifact_dir / WEIGHTS_FILE).is_file()


def test_onnx_graph_has_the_contract_names_and_dynamic_axes(artifact_dir):
    graph = onnx.load(str(artifact_dir / ONNX_INT8_FILE), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["sentiment_logits", "topic_logits"]
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert all(d.dim_param and not d.dim_value for d in dims)  # batch and sequence both symbolic
    size_mb = (artifact_dir / ONNX_INT8_FILE).stat().st_size / 2**20
    assert size_mb < 25
    ops = {node.op_type for node in graph.node}
    assert "QAttention" in ops and "SkipLayerNormalization" in ops  # fused attention, quantized


def test_fp32_onnx_export_matches_torch(artifact_dir, torch_engine):
    """The exporter itself is exact: fp32 ONNX == torch fp32 (so int8 differences are quantization only)."""
    fp32 = Engine(torch_engine.encoder, OnnxRunner(artifact_dir / ONNX_FP32_FILE, 1), torch_engine.info)
    a = torch_engine.predict_logits(SAMPLES)
    b = fp32.predict_logits(SAMPLES)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-4)


def test_int8_onnx_agrees_with_torch_fp32(onnx_engine, torch_engine):
    s8, t8 = onnx_engine.predict_proba(SAMPLES)
    s32, t32 = torch_engine.predict_proba(SAMPLES)
    assert np.abs(s8 - s32).max() < 0.05
    assert np.abs(t8 - t32).max() < 0.05
    # Fresh heads give near-uniform probabilities, so compare decisions only where fp32 is not a near-tie:
    # wherever fp32's top-2 margin exceeds the measured gap, int8 must pick the same class.
    for p8, p32 in ((s8, s32), (t8, t32)):
        top2 = np.sort(p32, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * np.abs(p8 - p32).max(axis=1)
        assert (p8.argmax(1)[clear] == p32.argmax(1)[clear]).all()
    agreement = (s8.argmax(1) == s32.argmax(1)).mean()
    assert agreement >= 0.75, agreement


def test_slim_copy_keeps_only_the_cpu_path(artifact_dir, tmp_path):
    from models.engine import load_engine

    slim = slim_copy(artifact_dir, tmp_path / "slim")
    assert not (slim / WEIGHTS_FILE).exists() and not (slim / ONNX_FP32_FILE).exists()
    total_mb = sum(p.stat().st_size for p in slim.rglob("*") if p.is_file()) / 2**20
    assert total_mb <= 25
    engine = load_engine(slim, device="cpu")
    assert engine.backend == "onnx"
    assert engine.classify(["Fed hikes rates"])[0].model_version == TEST_VERSION
