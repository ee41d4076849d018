"""LoRA (low-rank adapters, via ``peft``) on the shared encoder; merged back before export.

Why: a feedback retrain that updates ~1% of the weights is cheaper in optimizer memory and checkpoint size;
merging the adapters into the base weights before export means the artifact, the ONNX graph and serving
are exactly those of a full fine-tune. The two heads are always trained in full (they are outside the
encoder, so peft leaves them trainable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peft import LoraConfig, get_peft_model

# Attention projections and feed-forward layers of BERT-style (MiniLM) and MPNet encoders.
DEFAULT_TARGETS = ("query", "key", "value", "dense", "q", "k", "v", "o", "attn.o")


def target_modules(encoder: Any, wanted: Sequence[str]) -> list[str]:
    """Module-name suffixes from ``wanted`` that exist as Linear layers in this encoder."""
    import torch  # heavy optional dependency, kept lazy

    names = {name.rsplit(".", 1)[-1] for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)}
    found = [w for w in wanted if w in names]
    if not found:
        raise ValueError(f"none of the LoRA target modules {list(wanted)} is a Linear layer of this encoder: {sorted(names)}")
    return found


def apply_lora(model: Any, r: int, alpha: int, dropout: float, targets: Sequence[str] = DEFAULT_TARGETS) -> dict[str, int]:
    """Wrap ``model.encoder`` with LoRA adapters in place; returns trainable / total parameter counts."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules(model.encoder, targets),
                        bias="none")
    model.encoder = get_peft_model(model.encoder, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


def merge_lora(model: Any) -> None:
    """Fold the adapters into the encoder weights and drop the peft wrapper (plain architecture again)."""
    if hasattr(model.encoder, "merge_and_unload"):
        model.encoder = model.encoder.merge_and_unload()
