"""A real model artifact, built once per session from the base encoder with fresh (seeded) heads.

Building it runs the real export (save_torch_artifact + export_onnx_int8), so every engine test also
exercises the artifact writer and the int8 quantization. ~10 s on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEST_VERSION = "test-untrained"
TEST_MAX_LENGTH = 128


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer

    from models.artifact import ArtifactInfo
    from models.export import export_onnx_int8, save_torch_artifact
    from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
    from models.network import build_from_pretrained, default_base_encoder

    torch.set_num_threads(1)  # CI has 2 cores and other jobs: oversubscribed threads are slower
    torch.manual_seed(1234)
    base = default_base_encoder()
    model = build_from_pretrained(base, len(SENTIMENT_LABELS), len(TOPIC_LABELS)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    out = tmp_path_factory.mktemp("artifact") / "test-untrained"
    info = ArtifactInfo(version=TEST_VERSION, base_encoder=str(base), max_length=TEST_MAX_LENGTH, created_at="test")
    save_torch_artifact(model, tokenizer, out, info)
    export_onnx_int8(out, keep_fp32=True)
    return out


@pytest.fixture(scope="session")
def onnx_engine(artifact_dir: Path):
    from models.engine import load_engine

    return load_engine(artifact_dir, device="cpu", backend="onnx", threads=1)


@pytest.fixture(scope="session")
def torch_engine(artifact_dir: Path):
    from models.engine import load_engine

    return load_engine(artifact_dir, device="cpu", backend="torch", threads=1)
