import pytest

from models.prediction import InvalidTextError
from models.text_encoder import TextEncoder, validate_texts


@pytest.mark.parametrize(
    ("texts", "index", "reason"),
    [
        (["ok", ""], 1, "empty"),
        (["ok", "fine", " \t\n "], 2, "whitespace"),
        ([None], 0, "not a string"),
        (["ok", b"bytes"], 1, "not a string"),
        (["ok", 42], 1, "not a string"),
        (["ok", "\ud800 stocks"], 1, "not valid Unicode"),  # JSON's "\ud800" escape decodes to a lone surrogate
    ],
)
def test_bad_texts_name_their_index(texts, index, reason):
    with pytest.raises(InvalidTextError) as info:
        validate_texts(texts)
    assert info.value.index == index
    assert reason in info.value.reason
    assert f"index {index}" in str(info.value)


def test_a_bare_string_is_not_a_sequence_of_texts():
    with pytest.raises(TypeError):
        validate_texts("Fed hikes")


def test_valid_texts_pass_unchanged():
    texts = ("  padded  ", "🚀", "日本銀行")
    assert validate_texts(texts) == list(texts)


def test_encoder_truncates_to_max_length(artifact_dir):
    encoder = TextEncoder(artifact_dir / "tokenizer", max_length=16)
    short, long = encoder.encode(["Fed hikes rates", "stocks " * 500])
    assert short[0] == 101 and short[-1] == 102  # [CLS] ... [SEP]
    assert len(long) == 16 and long[-1] == 102
    assert encoder.pad_id == 0


def test_encoder_requires_a_fast_tokenizer_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        TextEncoder(tmp_path, 16)
