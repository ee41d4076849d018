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

``mm-text-v2``: the steps of v1, in the same order, with these defects of v1 fixed (v1 itself is kept unchanged,
byte for byte, because trained artifacts name it and must serve as they were trained):
  1. the mojibake fast-path gate sees every UTF-8 lead byte as Windows-1252/Latin-1 render it (U+00C2-U+00F4:
     ``ð`` of ``ðŸš€``, i.e. every mis-decoded emoji; ``æ`` of mis-decoded CJK; ``Ä`` of ``Ä‡``) followed by a
     continuation character, and ``Ã`` + space (``voilÃ le``: an ``à`` whose no-break space became a space);
     v1's gate knew 9 lead bytes, so ``ðŸš€`` stayed as it was instead of becoming `` rocket ``. The gate only
     saves time: ``ftfy`` decides whether to repair, and leaves correct text (``Société Générale``, ``Ørsted``,
     ``Nestlé``) alone;
  2. emoji names become words and nothing else changes (``🚀`` -> `` rocket ``, ``🕐`` -> `` one o'clock ``):
     v1 turned every ``_`` of a text holding an emoji into a space, splitting handles, words and URLs
     (``https://x.com/a_b 🚀`` -> ``[url] b rocket``, ``@jim_cramer`` -> ``@jim cramer``). The names' quotes
     are straightened as ``ftfy`` does (``o’clock`` -> ``o'clock``). Emoji still become words before URLs are
     replaced, so an emoji glued to a link (``https://t.co/x💯``) is not swallowed by it;
  3. idempotent, ``v2(v2(x)) == v2(x)``: entities are unescaped until none is left (``&amp;amp;amp;`` -> ``&``;
     v1 stops after two rounds), glued cashtags are all separated (``$AAPL$MSFT`` -> `` $aapl $msft ``; v1
     lower-cased the first only), and the steps are repeated on their own output until it stops changing (at
     most 4 more times; on real data one pass always suffices): ``ftfy`` judges a whole text, and may repair
     mojibake only once the links, emoji or control characters around it are gone;
  URLs, the other cashtags and whitespace as in v1 (steps 3-5), and a non-empty text never becomes empty.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Iterable, Sequence

import emoji
import ftfy

IDENTITY = "identity"
TEXT_V1 = "mm-text-v1"
TEXT_V2 = "mm-text-v2"
# What new training runs use. Stays v1 until a trained model shows that v2 is better.
DEFAULT_PREPROCESSING = TEXT_V1
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


# mm-text-v2's gate: a UTF-8 lead byte (0xC2-0xF4) as Latin-1/Windows-1252 show it, followed by a continuation
# byte (0x80-0xBF) as they show it (v1's continuation class, which holds all of them); or ``Ã`` + space.
_MOJIBAKE_HINT_V2_RE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
                                  "\u02c6\u02dc\u2013-\u203a\u20ac\u2122]|\u00c3 ")

# mm-text-v2's cashtags: a run of cashtags glued together (``$AAPL$MSFT``) counts as one match, split into its
# cashtags; v1 took the first only, and the next one, now after a space, on a second pass (not idempotent).
_CASHTAG_BODY = r"\$[A-Za-z][A-Za-z0-9]{0,9}(?:\.[A-Za-z]{1,2})?"
_CASHTAG_RUN_V2_RE = re.compile(rf"(?<![\w$])(?:{_CASHTAG_BODY}(?=\$))*{_CASHTAG_BODY}(?![A-Za-z0-9])")


# mm-text-v2 repeats its steps on its own output until nothing changes, at most this many times more.
_V2_MAX_EXTRA_PASSES = 4


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


def _replace_urls(text: str) -> str:
    """Every URL as the placeholder, runs of placeholders as one (the same step in every version)."""
    if "://" in text or "www." in text or "t.co/" in text or ":/" in text:
        text = URL_RE.sub(f" {URL_TOKEN} ", text)
        if text.count(URL_TOKEN) > 1:
            text = _URL_RUN_RE.sub(f" {URL_TOKEN} ", text)
    return text


def text_v1(text: str) -> str:
    """``mm-text-v1`` on one text (see the module docstring)."""
    original = text
    text = _fix_unicode(_unescape(text))
    text = _replace_urls(text)
    if "$" in text:
        text = CASHTAG_RE.sub(_cashtag, text)
    return " ".join(text.split()) or original


def _unescape_all(text: str) -> str:
    while "&" in text:
        unescaped = html.unescape(text)  # never longer than its input, so this ends
        if unescaped == text:
            break
        text = unescaped
    return text


@functools.lru_cache(maxsize=4096)
def _emoji_name_words(name: str) -> str:
    # ":rocket:" -> "rocket", ":one_o’clock:" -> "one o'clock" (ftfy's own form, so a second pass keeps it)
    return ftfy.fix_text(name.strip(":").replace("_", " "), normalization="NFC")


def _emoji_words(chars: str, data: dict) -> str:
    name = data.get("en")
    return f" {_emoji_name_words(name)} " if name else chars


def _fix_unicode_v2(text: str) -> str:
    if text.isascii():
        return text
    if _MOJIBAKE_HINT_V2_RE.search(text):
        text = ftfy.fix_text(text, normalization="NFC")
    if _EMOJI_HINT_RE.search(text):
        # version=-1: every emoji goes to handle_version, i.e. demojize's own matching, our replacement
        text = emoji.demojize(text, version=-1, handle_version=_emoji_words)
    return text


def _cashtag_run(match: re.Match[str]) -> str:
    return match.group().lower().replace("$", " $") + " "


def _text_v2_once(text: str) -> str:
    text = _fix_unicode_v2(_unescape_all(text))
    text = _replace_urls(text)
    if "$" in text:
        text = _CASHTAG_RUN_V2_RE.sub(_cashtag_run, text)
    return " ".join(text.split())


def text_v2(text: str) -> str:
    """``mm-text-v2`` on one text (see the module docstring): the steps repeated until the text stops changing."""
    previous, out = text, _text_v2_once(text)
    for _ in range(_V2_MAX_EXTRA_PASSES):
        if out == previous:
            break
        previous, out = out, _text_v2_once(out)
    return out or text


def identity(text: str) -> str:
    return text


PREPROCESSORS: dict[str, Callable[[str], str]] = {IDENTITY: identity, TEXT_V1: text_v1, TEXT_V2: text_v2}


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
