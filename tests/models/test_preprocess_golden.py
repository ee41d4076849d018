"""Preprocessing versions never drift: a trained artifact names its version and must serve exactly as it was trained.

Each version's outputs on tricky inputs are pinned in ``tests/fixtures/preprocess_golden.json``, and v1's (and v2's)
outputs on the first 2,000 texts of each tweet train file are pinned by hash. A failure here means a change of a
released version's behaviour (code, or an upgraded ``ftfy``/``emoji``): keep the version as it was and name the new
behaviour as a new version.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import pytest

from models.preprocess import IDENTITY, PREPROCESSORS, TEXT_V1, TEXT_V2, get_preprocessor

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "preprocess_golden.json"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_TEXTS = 2000

# file under ../shared/data -> (hash of its first 2,000 texts, of v1's outputs, of v2's outputs)
REAL_HASHES = {
    "twitter_financial_news_sentiment/train.csv": ("95d94df4e7c38de4", "0f78c75404b27360", "0f78c75404b27360"),
    "twitter_financial_news_topic/train.csv": ("8e86756cdea91b15", "d29d9dd739f33bc3", "3c5532c83b9fc539"),
    "stocknet_tweets_stream/stocknet_tweets_2014_2016.train.csv.gz":
        ("19b9ad8fab63780c", "a69e5e086d18fe75", "28e1e785950af22e"),
}


def _golden() -> list[dict[str, str]]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]


def test_every_versioned_preprocessor_has_golden_outputs():
    cases = _golden()
    assert len(cases) >= 40
    versions = set(PREPROCESSORS) - {IDENTITY}
    assert {TEXT_V1, TEXT_V2} <= versions
    for case in cases:
        assert versions <= set(case), f"{case['input']!r} lacks the golden output of {versions - set(case)}"
    assert len({case["input"] for case in cases}) == len(cases)


@pytest.mark.parametrize("version", [TEXT_V1, TEXT_V2])
def test_outputs_match_the_golden_file_exactly(version):
    fn = get_preprocessor(version)
    wrong = [(case["input"], case[version], fn(case["input"])) for case in _golden() if fn(case["input"]) != case[version]]
    assert not wrong, f"{version} changed behaviour (input, golden, now): {wrong}"


def _first_texts(path: Path, n: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    texts: list[str] = []
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            texts.append(row["text"])
            if len(texts) == n:
                break
    return texts


def _digest(texts) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(REAL_HASHES))
def test_outputs_on_real_tweets_hash_to_their_recorded_values(name):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"../shared/data/{name} not present")
    texts = _first_texts(path, REAL_TEXTS)
    inputs, v1_hash, v2_hash = REAL_HASHES[name]
    if _digest(texts) != inputs:
        pytest.skip(f"{name} is not the file the hashes were recorded on (its first {REAL_TEXTS} texts differ)")
    assert _digest(map(get_preprocessor(TEXT_V1), texts)) == v1_hash, f"mm-text-v1 drifted on {name}"
    assert _digest(map(get_preprocessor(TEXT_V2), texts)) == v2_hash, f"mm-text-v2 drifted on {name}"
