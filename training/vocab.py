"""Added tokens for the preprocessor's placeholders and frequent cashtags, with sensible initial embeddings.

Why: WordPiece splits ``$aapl`` into ``$ aa ##pl`` (three tokens that mean nothing alone) and ``[url]``
into four. Adding them as whole tokens of the artifact's tokenizer (saved in its tokenizer.json, so the
engine tokenizes the same way) keeps a cashtag one unit; each new embedding starts as the mean of the
pieces it used to be split into, so training starts from what the encoder already knew.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from tokenizers import AddedToken

from models.preprocess import URL_TOKEN, cashtags_in

# What a placeholder's embedding starts from (the word the encoder already knows best for it).
PLACEHOLDER_SEEDS = {URL_TOKEN: "link"}


def plan_added_tokens(hf_tokenizer: Any, texts: Iterable[str], min_count: int, max_new: int) -> list[str]:
    """``[url]`` plus the cashtags seen at least ``min_count`` times (most frequent first, at most ``max_new``),
    leaving out any that the tokenizer already keeps as one token."""
    backend = hf_tokenizer.backend_tokenizer
    counts = Counter(cashtags_in(texts))
    cashtags = [tag for tag, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count][:max_new]
    return [tok for tok in [URL_TOKEN, *cashtags] if len(backend.encode(tok, add_special_tokens=False).ids) > 1]


def add_tokens(hf_tokenizer: Any, model: Any, tokens: list[str]) -> dict[str, list[int]]:
    """Add ``tokens`` to the tokenizer, resize the encoder's embeddings, initialise each new row from the mean
    of its old pieces; returns token -> old piece ids (recorded in the training config)."""
    import torch  # heavy optional dependency, kept lazy

    if not tokens:
        return {}
    backend = hf_tokenizer.backend_tokenizer
    pieces = {tok: backend.encode(PLACEHOLDER_SEEDS.get(tok, tok), add_special_tokens=False).ids for tok in tokens}
    hf_tokenizer.add_tokens([AddedToken(tok, normalized=True, single_word=tok != URL_TOKEN) for tok in tokens])
    model.encoder.resize_token_embeddings(len(hf_tokenizer))
    weight = model.encoder.get_input_embeddings().weight
    with torch.no_grad():
        for tok, ids in pieces.items():
            weight[hf_tokenizer.convert_tokens_to_ids(tok)] = weight[ids].mean(dim=0)
    return pieces
