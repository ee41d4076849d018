"""Syndication (novelty) keys, computed at ingest: the same wire story re-published by many outlets must count once.

``story_key`` maps a headline to a short stable key so that copies ("UPDATE 2-Samsung estimates Q2 profit
down 26 pct", "Samsung estimates Q2 profit down 26% - Reuters") collide while different stories do not.
The storage layer marks every article whose key was already seen within a few hours as non-novel, and the
alert aggregation counts only novel articles, so a wire story cannot fake a spike.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Wire-service slugs at the start of a headline: "UPDATE 2-", "BRIEF-", "RPT-CORRECTED-", "WRAPUP 1-" ...
_SLUG_WORDS = (
    "update|brief|rpt|refile|corrected|correction|exclusive|wrapup|analysis|factbox|breakingviews|"
    "column|preview|insight|timeline|instant view|graphic|urgent|flash|breaking|update\\s*\\d+|"
    "wrapup\\s*\\d+|corrected\\s*\\d+|us stocks|global markets"
)
_PREFIX_RE = re.compile(rf"^\s*(?:(?:{_SLUG_WORDS})\s*\d*\s*[-:]\s*)+", re.IGNORECASE)
# Trailing attributions: " - Reuters", " | Bloomberg", " (Reuters)", " -source", " -sources", " -report".
_SOURCES = (
    "reuters|bloomberg|cnbc|marketwatch|wsj|the wall street journal|financial times|ft|ap|afp|dow jones|"
    "barron's|barrons|yahoo finance|seeking alpha|benzinga|business wire|businesswire|pr newswire|"
    "globenewswire|investing\\.com|fox business|cnn business|the motley fool|motley fool|forbes|"
    "source|sources|report|reports|filing|statement|media|paper|newspaper|sec filing"
)
_SUFFIX_RE = re.compile(
    rf"(?:\s*(?:[-|–—:]\s*|\(\s*)(?:{_SOURCES})\s*\)?\s*)+$", re.IGNORECASE
)
_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_CASHTAG_RE = re.compile(r"\$[a-z][a-z0-9.]{0,9}\b", re.IGNORECASE)
_ZERO_WIDTH_RE = re.compile("[\u200b-\u200f\u2060\ufeff]")
# Unit spellings that vary between copies of one story.
_SYNONYMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(\d)\s*%"), r"\1 pct"),
    (re.compile(r"\bper\s*cent\b|\bpercent\b"), "pct"),
    (re.compile(r"\bmillion\b|\bmn\b"), "mln"),
    (re.compile(r"\bbillion\b|\bbn\b"), "bln"),
    (re.compile(r"\btrillion\b|\btn\b"), "trln"),
    (re.compile(r"\b(\d+)\s*(?:m)\b"), r"\1 mln"),
    (re.compile(r"\b(\d+)\s*(?:b)\b"), r"\1 bln"),
    (re.compile(r"\bu\.?s\.?\b"), "us"),
    (re.compile(r"\bq(?:uarter)?\s*([1-4])\b"), r"q\1"),
)
_STOPWORDS = frozenset("a an the of to in on for and at by as its it is are be with from".split())
_NON_WORD_RE = re.compile(r"[^\w\s]+")


def normalize_headline(title: str) -> str:
    """Canonical form of a headline: no slugs, attributions, URLs, punctuation or filler words; cashtags
    become their bare symbol."""
    text = unicodedata.normalize("NFKC", title or "")
    text = _ZERO_WIDTH_RE.sub("", text)
    text = _URL_RE.sub(" ", text)
    # Slugs and attributions are stripped repeatedly: "RPT-UPDATE 1-..." or "... -source - Reuters".
    for _ in range(3):
        stripped = _SUFFIX_RE.sub("", _PREFIX_RE.sub("", text)).strip()
        if stripped == text.strip():
            break
        text = stripped
    text = text.casefold()
    # A cashtag is the story's subject ("$AAPL hits new 52-week high" and "$TSLA hits new 52-week high" are two
    # stories, and per-ticker alerts count novel articles only): it stays, as the bare symbol.
    text = _CASHTAG_RE.sub(lambda m: f" {m.group(0)[1:].replace('.', '')} ", text)
    text = text.replace("&", " and ")
    for pattern, repl in _SYNONYMS:
        text = pattern.sub(repl, text)
    # Keep decimals ("2.5") together, drop every other punctuation mark.
    text = re.sub(r"(\d)[.,](\d)", r"\1p\2", text)
    text = _NON_WORD_RE.sub(" ", text).replace("_", " ")
    words = [w for w in text.split() if w not in _STOPWORDS]
    return " ".join(words)


def story_key(title: str) -> str:
    """Stable 16-hex-digit key of a headline's story; equal for syndicated copies of one story."""
    normalized = normalize_headline(title)
    if not normalized:  # an empty or all-punctuation title: key on the raw text so it collides with nothing else
        normalized = "\x00raw:" + (title or "")
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()[:16]
