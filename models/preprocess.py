"""Text preprocessing shared by training and serving, versioned in the model artifact.

Why: without it URLs are ~30-40% of the tokens of a tweet (and push real words past ``max_length``),
every emoji is ``[UNK]``, HTML entities and mojibake (``itâ€™s``) reach the model as noise. The artifact
names the version it was trained with (``ArtifactInfo.preprocessing``); the engine applies exactly that
version, and an artifact without the field keeps ``identity`` so older models serve as before.

``mm-text-v1``:
  1. HTML entities unescaped (``&amp;`` -> ``&``), twice at most (double-escaped feeds exist);
  2. non-ASCII text only (fast path: most headlines are ASCII): mojibake repaired with ``ftfy``, emoji
     turned into words with the ``emoji`` package (``🚀`` -> `` rocket ``);
  3. every URL replaced by the placeholder ``[url]`` (an added token of the artifact's tokenizer), runs of
     placeholders collapsed to one;
  4. cashtags separated from what sticks to them and lower-cased (``($AAPL)`` -> ``( $aapl )``), so the
     added cashtag tokens of the tokenizer (see ``training.vocab``) match them whole;
  5. whitespace collapsed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence

import emoji
import ftfy

IDENTITY = "identity"
TEXT_V1 = "mm-text-v1"
DEFAULT_PREPROCESSING = TEXT_V1  # what new training runs use
URL_TOKEN = "[url]"

URL_RE = re.compile(r"(?:https?://|www\.)\S+|\bt\.co/\S+|https?:/*…?", re.IGNORECASE)
# A cashtag: $ + a letter + up to 9 letters/digits (optionally .X share class), not inside a word or amount.
CASHTAG_RE = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:\.[A-Za-z]{1,2})?)(?![A-Za-z0-9])")
# Two or more placeholders in a row. Anchored on the token, not on whitespace: a leading ``\s*`` made a failed
# match backtrack quadratically over long blank runs (0.9 s for one 20,000-character text).
_URL_RUN_RE = re.compile(r"\[url\](?:\s*\[url\])+")
# Cheap prechecks, so the common ASCII headline pays for none of the expensive steps.
_EMOJI_HINT_RE = re.compile("[\U0001F000-\U0001FAFF\u2190-\u21FF\u2300-\u27BF\u2B00-\u2BFF\uFE0F\u200D]")
# Characters that only appear in UTF-8 text mis-decoded as Windows-1252/Latin-1 ("itâ€™s", "cafÃ©").
_MOJIBAKE_HINT_RE = re.compile("[\u00c2\u00c3\u00e2\u00c5\u00ce\u00cf\u00d0\u00d1\u00ef][\u0080-\u00bf\u0152\u0153\u0160\u0161"
                               "\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]")


class UnknownPreprocessingError(ValueError):
    """An artifact names a preprocessing version this code does not know (written by a newer version)."""


def _unescape(text: str) -> str:
    for _ in range(2):
        if "&" not in text:
            break
        text = html.unescape(text)
    return text


def _fix_unicode(text: str) -> str:
    if text.isascii():
        return text
    if _MOJIBAKE_HINT_RE.search(text):
        text = ftfy.fix_text(text, normalization="NFC")
    if _EMOJI_HINT_RE.search(text):
        text = emoji.demojize(text, delimiters=(" ", " ")).replace("_", " ")
    return text


def _cashtag(match: re.Match[str]) -> str:
    return f" ${match.group(1).lower()} "


def text_v1(text: str) -> str:
    """``mm-text-v1`` on one text (see the module docstring)."""
    original = text
    text = _fix_unicode(_unescape(text))
    if "://" in text or "www." in text or "t.co/" in text or ":/" in text:
        text = URL_RE.sub(f" {URL_TOKEN} ", text)
        if text.count(URL_TOKEN) > 1:
            text = _URL_RUN_RE.sub(f" {URL_TOKEN} ", text)
    if "$" in text:
        text = CASHTAG_RE.sub(_cashtag, text)
    return " ".join(text.split()) or original


def identity(text: str) -> str:
    return text


PREPROCESSORS: dict[str, Callable[[str], str]] = {IDENTITY: identity, TEXT_V1: text_v1}


def get_preprocessor(version: str | None) -> Callable[[str], str]:
    """The function for an artifact's ``preprocessing`` field (None/absent = identity)."""
    name = version or IDENTITY
    if name not in PREPROCESSORS:
        raise UnknownPreprocessingError(
            f"unknown preprocessing {name!r} (known: {sorted(PREPROCESSORS)}); the artifact needs newer code"
        )
    return PREPROCESSORS[name]


def preprocess_all(texts: Sequence[str], version: str | None) -> list[str]:
    fn = get_preprocessor(version)
    return list(texts) if fn is identity else [fn(t) for t in texts]


def cashtags_in(texts: Iterable[str]) -> list[str]:
    """Cashtags (``$aapl`` form) in already-preprocessed texts, with repeats, for vocabulary building."""
    return [f"${m.group(1).lower()}" for text in texts for m in CASHTAG_RE.finditer(text)]
