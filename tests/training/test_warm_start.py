"""``init_from``: a retrain that starts from a trained artifact (weights, both heads, its tokenizer with the
added tokens) instead of the base encoder."""

import json

import pytest

from models.artifact import METRICS_FILE
from training.config import TrainConfig
from training.trainer import train


def _config(data, out, **kw) -> TrainConfig:
    return TrainConfig(data_path=data, output_dir=out, epochs=1, batch_size=16, limit_per_dataset=24,
                       max_length=32, threads=1, export_onnx=False, **kw)


@pytest.fixture(scope="module")
def parent(tiny_data, tmp_path_factory):
    return train(_config(tiny_data, tmp_path_factory.mktemp("parent") / "p", max_steps=6, lr=3e-4,
                         version="parent"), progress=False)


def test_warm_start_begins_exactly_where_the_parent_ended(tiny_data, parent, tmp_path) -> None:
    # One step at a vanishing learning rate: the child must score the dev rows exactly as the parent does.
    child = train(_config(tiny_data, tmp_path / "c", init_from=parent, max_steps=1, lr=1e-12, warmup_ratio=0.0,
                          dropout=0.0, version="child"), progress=False)
    a = json.loads((parent / METRICS_FILE).read_text())["dev"]
    b = json.loads((child / METRICS_FILE).read_text())["dev"]
    assert {k: v["fp32"] for k, v in a.items()} == {k: v["fp32"] for k, v in b.items()}
    # From the base encoder instead, one such step leaves untrained heads: a different model.
    cold = train(_config(tiny_data, tmp_path / "cold", max_steps=1, lr=1e-12, warmup_ratio=0.0, version="cold"),
                 progress=False)
    c = json.loads((cold / METRICS_FILE).read_text())["dev"]
    assert {k: v["fp32"] for k, v in a.items()} != {k: v["fp32"] for k, v in c.items()}
    record = json.loads((child / "training_config.json").read_text())
    assert record["config"]["init_from"] == str(parent)


def test_warm_start_refuses_other_preprocessing(tiny_data, parent, tmp_path) -> None:
    with pytest.raises(ValueError, match="preprocessing"):
        train(_config(tiny_data, tmp_path / "x", init_from=parent, max_steps=1, preprocessing="identity"),
              progress=False)
