"""Torch runtime for the engine: loads an artifact's fp32 weights and runs batches on CPU or CUDA.

On CUDA the forward runs under autocast (bf16 where supported, else fp16) and an out-of-memory error
splits the batch in half and retries (``models.batching.call_with_halving``). The device call itself is
the ``forward`` seam: tests inject a callable that raises ``torch.cuda.OutOfMemoryError`` to exercise the
retry without a GPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.artifact import ENCODER_CONFIG_FILE, ArtifactError, ArtifactInfo, torch_weights_file
from models.batching import call_with_halving
from models.network import MultiTaskClassifier, build_from_config

Forward = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def load_torch_model(artifact_dir: Path, info: ArtifactInfo) -> MultiTaskClassifier:
    """Rebuild the network from encoder_config.json and load its weights (eval mode, fp32, CPU).

    Reads model.safetensors (fp32) or, in slim artifacts, model.fp16.safetensors (upcast to fp32 here; the
    CUDA runner autocasts to bf16/fp16 anyway).
    """
    from safetensors.torch import load_file

    config_path, weights_path = artifact_dir / ENCODER_CONFIG_FILE, torch_weights_file(artifact_dir)
    if weights_path is None:
        raise ArtifactError(f"{artifact_dir} has no model.safetensors or model.fp16.safetensors: torch weights are not in this artifact")
    if not config_path.is_file():
        raise ArtifactError(f"{artifact_dir} has no {config_path.name}: torch weights are not in this artifact")
    encoder_config = json.loads(config_path.read_text())
    model = build_from_config(encoder_config, len(info.labels["sentiment"]), len(info.labels["topic"]))
    state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Buffers such as position_ids may legitimately be absent from a saved state dict.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ArtifactError(f"weights do not match the architecture: missing={missing[:5]} unexpected={unexpected[:5]}")
    return model.eval()


def is_cuda_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


class TorchRunner:
    """(input_ids, attention_mask) numpy int64 -> (sentiment_logits, topic_logits) numpy float32.

    ``forward`` defaults to the model on ``device``; pass another callable to simulate device failures.
    Not safe for concurrent calls from several threads (torch is, but the OOM bookkeeping is not).
    """

    def __init__(
        self,
        model: MultiTaskClassifier,
        device: str = "cpu",
        threads: int | None = None,
        forward: Forward | None = None,
        half_precision: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(threads)
        self.model = model.to(self.device).eval()
        use_half = self.device.type == "cuda" if half_precision is None else half_precision
        self.autocast_dtype: torch.dtype | None = None
        if use_half and self.device.type == "cuda":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self._forward: Forward = forward or self._model_forward
        self.oom_splits = 0  # how many times a batch was halved after an out-of-memory error

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.autocast_dtype, "fp32")  # type: ignore[arg-type]

    def _model_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.autocast_dtype is None:
            return self.model(input_ids, attention_mask)
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
            return self.model(input_ids, attention_mask)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids))
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask))

        def run(rows: slice) -> list[tuple[np.ndarray, np.ndarray]]:
            sub_mask = mask[rows]
            width = int(sub_mask.sum(dim=1).max())  # a half may need less padding than the whole batch
            with torch.inference_mode():
                sent, topic = self._forward(ids[rows, :width].to(self.device), sub_mask[:, :width].to(self.device))
            sent_np, topic_np = sent.float().cpu().numpy(), topic.float().cpu().numpy()
            return list(zip(sent_np, topic_np))

        def on_split(_size: int) -> None:
            self.oom_splits += 1
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

        rows = call_with_halving(run, len(ids), is_cuda_oom, on_split)
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
