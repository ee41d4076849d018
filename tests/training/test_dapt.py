"""Domain-adaptive masked-LM pass: a real (tiny) run writes an encoder that training loads, judged on
held-out texts, and never reads text that near-duplicates a labeled dev row."""

import gzip
import json
import shutil

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from models.network import default_base_encoder
from training.config import TrainConfig
from training.dapt import DAPT_RECORD, DaptConfig, adapt, dapt_texts, split_heldout
from training.datasets import load_labeled_sets, near_duplicate_key
from training.trainer import train


@pytest.fixture(scope="module")
def data_with_stream(tiny_data, tmp_path_factory):
    """The tiny labeled folder plus a Reuters train file, one headline of which copies a labeled dev text."""
    root = tmp_path_factory.mktemp("dapt") / "data"
    shutil.copytree(tiny_data, root)
    dev_text = next(iter(load_labeled_sets(root, seed=13).dev["phrasebank"])).text
    (root / "reuters_news_stream").mkdir()
    with gzip.open(root / "reuters_news_stream/reuters_news_2011_2018.train.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write("article_id,published_date,ticker,company,headline,summary,news_type,source\n")
        for i in range(120):
            fh.write(f"{i},2012-01-01,ACM,Acme,Acme shares rise {i} percent after results beat forecasts,s,normal,Reuters\n")
        fh.write(f"999,2012-01-02,ACM,Acme,\"{dev_text.upper()}\",s,normal,Reuters\n")
    return root, dev_text


def test_dapt_texts_leave_out_labeled_dev_rows(data_with_stream):
    root, dev_text = data_with_stream
    texts, fingerprints = dapt_texts(root, per_stream=1000, seed=13)
    assert len(texts) == 120 and "reuters_news_stream/reuters_news_2011_2018.train.csv.gz" in fingerprints
    assert near_duplicate_key(dev_text) not in {near_duplicate_key(t) for t in texts}


def test_heldout_split_is_disjoint_and_seeded():
    texts = [f"t{i}" for i in range(100)]
    train_a, held_a = split_heldout(texts, 500, seed=1)
    assert len(held_a) == 20 and not set(train_a) & set(held_a) and set(train_a) | set(held_a) == set(texts)
    assert split_heldout(texts, 500, seed=1) == (train_a, held_a) != split_heldout(texts, 500, seed=2)


def test_adapted_encoder_lowers_heldout_loss_and_trains(data_with_stream, tmp_path):
    root, _ = data_with_stream
    texts, fingerprints = dapt_texts(root, per_stream=1000, seed=13)
    out = tmp_path / "enc"
    # Repetitive headlines: a few epochs must lower the masked-LM loss on held-out ones of the same form.
    result = adapt(default_base_encoder(), out, texts, DaptConfig(epochs=3, lr=3e-4, batch_size=16, threads=1,
                                                                  heldout=20, mask_probability=0.3),
                   fingerprints, progress=False)
    assert result.heldout_texts == 20 and result.train_texts == 100
    assert result.loss_after < result.loss_before - 0.5
    record = json.loads((out / DAPT_RECORD).read_text())
    assert record["heldout_mlm_loss"] == {"before": result.loss_before, "after": result.loss_after}
    assert record["data_fingerprints"] == fingerprints and record["config"]["epochs"] == 3
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    # The folder is a base encoder like the stock one.
    artifact = train(TrainConfig(data_path=root, output_dir=tmp_path / "model", base_encoder=out, epochs=1,
                                 max_steps=2, batch_size=16, limit_per_dataset=24, max_length=32, threads=1,
                                 export_onnx=False, version="dapt-student"), progress=False)
    assert (artifact / "MODEL_CARD.md").is_file()


def test_dapt_cli_says_when_there_is_no_stream(tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["dapt", "--data", str(tiny_data), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "no unlabeled stream texts" in result.output
