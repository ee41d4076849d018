"""Input validation and tokenization (the engine's preprocess step).

Uses the Rust ``tokenizers`` library on the artifact's ``tokenizer/tokenizer.json`` directly instead of
``transformers.AutoTokenizer``: same tokens, but no torch/transformers import on the CPU path (start-up
time and hundreds of MB of RSS saved). Padding is left to ``models.batching`` so each micro-batch is
padded only to its own longest text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models.prediction import InvalidTextError


def validate_texts(texts: Sequence[object]) -> list[str]:
    """Return ``texts`` as a list of str, or raise InvalidTextError naming the first bad index."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of strings, not a single string")
    checked: list[str] = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTextError(index, f"not a string (got {type(text).__name__})")
        if not text:
            raise InvalidTextError(index, "empty text")
        if text.isspace():
            raise InvalidTextError(index, "whitespace-only text")
        checked.append(text)
    return checked


class TextEncoder:
    """Turns texts into token id lists, truncated to ``max_length`` tokens (special tokens included)."""

    def __init__(self, tokenizer_dir: Path | str, max_length: int) -> None:
        from tokenizers import Tokenizer

        path = Path(tokenizer_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (the artifact's tokenizer must be a fast tokenizer)")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        self.max_length = max_length
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (with [CLS]/[SEP]), at most ``max_length`` each."""
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]
