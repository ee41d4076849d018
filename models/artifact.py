"""On-disk layout of a model artifact, shared by training (writer) and the engine (reader).

    <artifact>/
      artifact.json          version, base encoder, max_length, label maps, created_at, preprocessing
                             version, per-head softmax temperatures
      encoder_config.json    HF config of the encoder (rebuild the architecture without the base folder)
      tokenizer/             HF tokenizer files (tokenizer.json, vocab.txt, ...)
      model.safetensors      fp32 weights of MultiTaskClassifier (torch/CUDA path; optional)
      model.fp16.safetensors fp16 copy kept by slim artifacts (GPU path: half the size of fp32; optional)
      model.int8.onnx        dynamic-int8 ONNX export (CPU path; optional)
      training_config.json   exact training config + data fingerprints (written by training)
      metrics.json           dev-set metrics (written by training)
      MODEL_CARD.md, *.png   human-readable card, confusion matrices, training curve

The committed default model keeps only the small files and the int8 ONNX export (~23 MB).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.labels import label_maps

ARTIFACT_FILE = "artifact.json"
ENCODER_CONFIG_FILE = "encoder_config.json"
TOKENIZER_DIR = "tokenizer"
WEIGHTS_FILE = "model.safetensors"
FP16_WEIGHTS_FILE = "model.fp16.safetensors"
ONNX_INT8_FILE = "model.int8.onnx"
ONNX_FP32_FILE = "model.onnx"
TRAINING_CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"

# The default model shipped inside the package, so a fresh clone classifies offline with no training step.
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


class ArtifactError(RuntimeError):
    """A model folder that is missing files or is not a MarketMood artifact."""


@dataclass(frozen=True)
class ArtifactInfo:
    version: str
    base_encoder: str
    max_length: int
    labels: dict[str, list[str]] = field(default_factory=label_maps)
    created_at: str = ""
    parent_version: str | None = None
    # Text preprocessing version (models.preprocess); absent in older artifacts = identity, as they were trained.
    preprocessing: str = "identity"
    # Softmax temperature per head fitted on the selection split (calibration); absent = 1.0 (raw softmax).
    temperatures: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def write_info(directory: Path, info: ArtifactInfo) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ARTIFACT_FILE).write_text(info.to_json() + "\n")


def read_info(directory: Path | str) -> ArtifactInfo:
    directory = Path(directory)
    path = directory / ARTIFACT_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a MarketMood model artifact (no {ARTIFACT_FILE})")
    data: dict[str, Any] = json.loads(path.read_text())
    return ArtifactInfo(**data)


def read_training_config(directory: Path | str) -> dict[str, Any]:
    """The artifact's ``training_config.json`` (how it was trained: config, splits, retrain record), or {} when
    it has none (a hand-made artifact)."""
    path = Path(directory) / TRAINING_CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def has_onnx(directory: Path) -> bool:
    return (directory / ONNX_INT8_FILE).is_file()


def torch_weights_file(directory: Path) -> Path | None:
    """The fp32 weights if present, else the fp16 copy, else None."""
    for name in (WEIGHTS_FILE, FP16_WEIGHTS_FILE):
        if (directory / name).is_file():
            return directory / name
    return None


def has_torch_weights(directory: Path) -> bool:
    return torch_weights_file(directory) is not None and (directory / ENCODER_CONFIG_FILE).is_file()
