"""Input validation and tokenization (the engine's preprocess step).

Uses the Rust ``tokenizers`` library on the artifact's ``tokenizer/tokenizer.json`` directly instead of
``transformers.AutoTokenizer``: same tokens, but no torch/transformers import on the CPU path (start-up
time and hundreds of MB of RSS saved). Padding is left to ``models.batching`` so each micro-batch is
padded only to its own longest text. Training encodes through this same class (``from_tokenizer``) with
the same ``models.preprocess`` version, so training and serving see identical token ids by construction.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from models.preprocess import IDENTITY, get_preprocessor
from models.prediction import InvalidTextError


def invalid_unicode(text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (a lone surrogate: JSON's "\\ud800" escape decodes to one), or None.

    Such text breaks the tokenizer and PostgreSQL alike; API and feedback inputs are refused with this reason.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode ({exc.reason} at character {exc.start})"
    return None


def has_visible_characters(text: str) -> bool:
    """Whether ``text`` has anything but whitespace, control and format characters (zero-width spaces, joiners,
    BOMs, direction marks: category Cf). Python's ``isspace`` passes a lone zero-width space, and the model
    would then score a text with no tokens at all: a guess dressed as a prediction."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf") for ch in text)


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
        if not has_visible_characters(text):
            raise InvalidTextError(index, "no visible characters (only whitespace, control or zero-width characters)")
        if (problem := invalid_unicode(text)) is not None:
            raise InvalidTextError(index, problem)
        checked.append(text)
    return checked


class TextEncoder:
    """Turns texts into token id lists: preprocess (artifact's version), tokenize, truncate to ``max_length``."""

    def __init__(self, tokenizer_dir: Path | str, max_length: int, preprocessing: str | None = IDENTITY) -> None:
        path = Path(tokenizer_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (the artifact's tokenizer must be a fast tokenizer)")
        self._setup(Tokenizer.from_file(str(path)), max_length, preprocessing)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, max_length: int, preprocessing: str | None = IDENTITY) -> TextEncoder:
        """From an in-memory Rust tokenizer (training: ``hf_tokenizer.backend_tokenizer``); it is copied, not mutated."""
        encoder = cls.__new__(cls)
        encoder._setup(Tokenizer.from_str(tokenizer.to_str()), max_length, preprocessing)
        return encoder

    def _setup(self, tokenizer: Tokenizer, max_length: int, preprocessing: str | None) -> None:
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        self.max_length = max_length
        self.preprocessing = preprocessing or IDENTITY
        self._preprocess = get_preprocessor(self.preprocessing)
        pad_id = self._tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            pad_id = self._tokenizer.token_to_id("<pad>")
        self.pad_id = 0 if pad_id is None else pad_id
        # what an empty text encodes to ([CLS] [SEP] for BERT-style tokenizers): a text of no more has no content
        self.special_tokens = len(self._tokenizer.encode("", add_special_tokens=True).ids)

    @classmethod
    def of_artifact(cls, artifact_dir: Path | str) -> TextEncoder:
        """The encoder an artifact serves with (its tokenizer, max length and preprocessing version)."""
        from models.artifact import TOKENIZER_DIR, read_info

        info = read_info(artifact_dir)
        return cls(Path(artifact_dir) / TOKENIZER_DIR, info.max_length, info.preprocessing)

    def readable(self, text: str) -> bool:
        """Whether ``text`` has at least one word piece for the model (the engine refuses it otherwise)."""
        return len(self.encode([text])[0]) > self.special_tokens

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (with special tokens), at most ``max_length`` each."""
        prepared = [self._preprocess(t) for t in texts]
        return [enc.ids for enc in self._tokenizer.encode_batch(prepared, add_special_tokens=True)]
