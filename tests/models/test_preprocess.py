"""The shared text preprocessor: what it does to tweets, and that old artifacts keep raw text."""

import json

import pytest

from models.artifact import ARTIFACT_FILE, BUNDLED_MODEL_DIR, read_info
from models.preprocess import (
    IDENTITY,
    TEXT_V1,
    UnknownPreprocessingError,
    cashtags_in,
    get_preprocessor,
    text_v1,
)
from models.text_encoder import TextEncoder


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$AAPL beats https://t.co/abc123 http://x.y/z", "$aapl beats [url]"),
        ("Stocks 🚀 up &amp;amp; ($TSLA)", "Stocks rocket up & ( $tsla )"),
        ("Itâ€™s a deal", "It's a deal"),
        ("costs $5 billion, not $AAPL", "costs $5 billion, not $aapl"),
        ("RT @a: $BRK.B rallies www.example.com/x", "RT @a: $brk.b rallies [url]"),
        ("plain ASCII headline stays", "plain ASCII headline stays"),
    ],
)
def test_text_v1(raw, expected):
    assert text_v1(raw) == expected


def test_cashtags_and_unknown_versions():
    assert cashtags_in([text_v1("$AAPL and $msft vs $5")]) == ["$aapl", "$msft"]
    assert get_preprocessor(None)("  $AAPL https://t.co/x ") == "  $AAPL https://t.co/x "
    with pytest.raises(UnknownPreprocessingError, match="newer code"):
        get_preprocessor("mm-text-v99")


def test_artifact_without_the_field_keeps_identity(artifact_dir, tmp_path):
    data = json.loads((artifact_dir / ARTIFACT_FILE).read_text())
    data.pop("preprocessing", None)
    (tmp_path / ARTIFACT_FILE).write_text(json.dumps(data))
    assert read_info(tmp_path).preprocessing == IDENTITY
    text = "$AAPL beats https://t.co/abc123"
    raw = TextEncoder(artifact_dir / "tokenizer", 64, IDENTITY)
    v1 = TextEncoder(artifact_dir / "tokenizer", 64, TEXT_V1)
    assert raw.encode([text]) != v1.encode([text])  # the preprocessor really changes what the model sees
    assert raw.encode([text]) == TextEncoder(artifact_dir / "tokenizer", 64, read_info(tmp_path).preprocessing).encode([text])


def test_bundled_model_serves_raw_text_as_it_was_trained():
    if not (BUNDLED_MODEL_DIR / ARTIFACT_FILE).is_file():
        pytest.skip("no bundled model")
    info = read_info(BUNDLED_MODEL_DIR)
    if "preprocessing" not in json.loads((BUNDLED_MODEL_DIR / ARTIFACT_FILE).read_text()):
        assert info.preprocessing == IDENTITY
