"""AdamW parameter groups shared by fine-tuning and the masked-LM pass: biases and LayerNorm weights are not
decayed (decaying them only pulls normalisation and offsets toward zero)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NO_DECAY_SUFFIXES = ("bias", "LayerNorm.weight", "layer_norm.weight")


def weight_decay_groups(named_parameters: Iterable[tuple[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups of the trainable parameters: decayed, and not decayed (biases, LayerNorm weights)."""
    named = [(n, p) for n, p in named_parameters if p.requires_grad]
    return [
        {"params": [p for n, p in named if not n.endswith(NO_DECAY_SUFFIXES)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n.endswith(NO_DECAY_SUFFIXES)], "weight_decay": 0.0},
    ]
