"""Weight averaging of trained artifacts: the pure mean, the compatibility checks, and `marketmood soup` end to end."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from marketmood.cli import cli
from models import load_engine
from models.artifact import CARD_FILE, FP16_WEIGHTS_FILE, ONNX_INT8_FILE, TRAINING_CONFIG_FILE, WEIGHTS_FILE, read_info
from training.config import TrainConfig
from training.soup import SoupError, average_state_dicts, check_compatible, load_ingredient
from training.trainer import train


def test_average_is_the_elementwise_mean_and_keeps_dtypes():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5], dtype=torch.float16), "ids": torch.arange(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([1.5], dtype=torch.float16), "ids": torch.arange(3)}
    c = {"w": torch.tensor([2.0, 1.0]), "b": torch.tensor([1.0], dtype=torch.float16), "ids": torch.arange(3)}
    out = average_state_dicts([a, b, c])
    assert torch.allclose(out["w"], torch.tensor([2.0, 3.0]))
    assert out["b"].dtype == torch.float16 and float(out["b"]) == 1.0
    assert torch.equal(out["ids"], torch.arange(3))


@pytest.mark.parametrize("other, message", [
    ({"w": torch.zeros(2)}, "other weights"),
    ({"w": torch.zeros(3), "ids": torch.arange(3)}, "shapes"),
    ({"w": torch.zeros(2), "ids": torch.tensor([0, 1, 5])}, "integer buffer"),
])
def test_average_refuses_what_is_not_one_network(other, message):
    with pytest.raises(SoupError, match=message):
        average_state_dicts([{"w": torch.ones(2), "ids": torch.arange(3)}, other])


def test_weighted_average_scales_the_weights_to_sum_one():
    a, b = {"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([4.0, 0.0])}
    assert torch.allclose(average_state_dicts([a, b], [3, 1])["w"], torch.tensor([1.0, 3.0]))
    assert torch.allclose(average_state_dicts([a, b], [0.75, 0.25])["w"], torch.tensor([1.0, 3.0]))
    for bad in ([1.0], [1.0, 0.0], [1.0, -1.0], [1.0, 1.0, 1.0]):
        with pytest.raises(SoupError, match="positive weights"):
            average_state_dicts([a, b], bad)


def test_average_needs_two_ingredients():
    with pytest.raises(SoupError, match="at least two"):
        average_state_dicts([{"w": torch.ones(2)}])


def _run(tiny_data, out, init_seed, **extra):
    config = TrainConfig(data_path=tiny_data, output_dir=out, epochs=1, max_steps=3, batch_size=16, max_length=32,
                         version=f"soup-part-{init_seed}", threads=1, init_seed=init_seed, **extra)
    return train(config, progress=False)


@pytest.fixture(scope="module")
def parts(tiny_data, tmp_path_factory):
    """Two short runs of one recipe that differ only in their init seed (so their weights differ)."""
    return [_run(tiny_data, tmp_path_factory.mktemp(f"part{seed}"), seed) for seed in (1, 2)]


def test_soup_cli_writes_the_mean_of_the_weights_as_a_full_artifact(parts, tiny_data, tmp_path):
    out = tmp_path / "soup"
    result = CliRunner().invoke(cli, ["soup", *map(str, parts), "--out", str(out), "--version", "soup-test",
                                      "--data", str(tiny_data), "--threads", "1"])
    assert result.exit_code == 0, result.output
    a, b = (load_file(str(p / WEIGHTS_FILE)) for p in parts)
    mixed = load_file(str(out / WEIGHTS_FILE))
    assert set(mixed) == set(a)
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert moved, "the two parts should differ (different init seeds)"
    for key in moved:
        assert torch.allclose(mixed[key], (a[key] + b[key]) / 2, atol=1e-6), key
    assert read_info(out).version == "soup-test"
    record = json.loads((out / TRAINING_CONFIG_FILE).read_text())
    assert [i["version"] for i in record["soup"]["ingredients"]] == ["soup-part-1", "soup-part-2"]
    assert record["command"] is None or "soup" in record["command"]
    card = (out / CARD_FILE).read_text()
    assert "Weight average (model soup)" in card and "soup-part-1" in card and "soup-part-2" in card
    assert "training_curve.png" not in card  # the average trained nothing: no curve claimed
    for line in ("soup-part-1", "soup-part-2", "average -> soup-test", "0.500"):
        assert line in result.output
    (prediction,) = load_engine(out, backend="onnx", device="cpu").classify(["Acme shares plunge after profit warning"])
    assert (out / ONNX_INT8_FILE).is_file() and prediction.model_version == "soup-test"


def test_a_soup_of_one_model_with_itself_scores_like_it(parts, tiny_data, tmp_path):
    from training.soup import soup

    _, summary = soup([parts[0], parts[0]], output_dir=tmp_path / "same", version="same", data_path=tiny_data, threads=1)
    (alone, again) = summary["ingredients"]
    assert alone["selection_score"] == again["selection_score"] == pytest.approx(summary["selection_score"], abs=1e-9)


def test_a_weight_per_ingredient_or_a_usage_error(parts, tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["soup", *map(str, parts), "--out", str(tmp_path / "w"), "--version", "w",
                                      "--data", str(tiny_data), "--weight", "1"])
    assert result.exit_code == 2 and "2 positive weights" in result.output
    assert not (tmp_path / "w" / WEIGHTS_FILE).exists()


def test_ingredients_on_other_splits_are_refused(parts, tiny_data, tmp_path):
    other = tmp_path / "other-seed"
    shutil.copytree(parts[1], other)
    record = json.loads((other / TRAINING_CONFIG_FILE).read_text())
    record["config"]["seed"] += 1
    (other / TRAINING_CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(SoupError, match="seed"):
        check_compatible([load_ingredient(parts[0]), load_ingredient(other)])
    result = CliRunner().invoke(cli, ["soup", str(parts[0]), str(other), "--out", str(tmp_path / "x"),
                                      "--version", "x", "--data", str(tiny_data)])
    assert result.exit_code == 2 and "seed" in result.output
    assert not (tmp_path / "x" / WEIGHTS_FILE).exists()


def test_other_vocabularies_and_weightless_artifacts_are_refused(parts, tiny_data, tmp_path):
    from training.soup import Ingredient, soup

    first = load_ingredient(parts[0])
    renamed = Ingredient(path=parts[1], info=first.info, record=first.record, vocab={**first.vocab, "$zzz": 10**6})
    with pytest.raises(SoupError, match="vocabulary"):
        check_compatible([first, renamed])
    slim = tmp_path / "slim"
    shutil.copytree(parts[1], slim)
    for weights in (WEIGHTS_FILE, FP16_WEIGHTS_FILE):  # what `slim_copy` leaves out: int8 ONNX only
        (slim / weights).unlink()
    with pytest.raises(SoupError, match="weights"):
        soup([parts[0], slim], output_dir=tmp_path / "y", version="y", data_path=tiny_data, threads=1)
    old_record = tmp_path / "old-record"
    shutil.copytree(parts[0], old_record)
    record = json.loads((old_record / TRAINING_CONFIG_FILE).read_text())
    record["config"]["a_setting_this_code_dropped"] = 1
    (old_record / TRAINING_CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(SoupError, match="does not fit"):
        soup([old_record, parts[1]], output_dir=tmp_path / "z", version="z", data_path=tiny_data, threads=1)
