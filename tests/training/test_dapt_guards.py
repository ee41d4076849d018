"""DAPT guards: a run is refused an adapted encoder whose texts were cleaned of other splits' dev rows; the
masked-LM collator never masks the pieces of the ``[url]`` placeholder."""

import json

import pytest
import torch

from models.network import default_base_encoder
from training.config import TrainConfig
from training.dapt import DAPT_RECORD, DaptConfig, check_dapt_splits, dapt_split_settings, masked_batch
from training.trainer import train


def _adapted(tmp_path, **config):
    folder = tmp_path / "adapted"
    folder.mkdir()
    (folder / DAPT_RECORD).write_text(json.dumps({"config": config}))
    return folder


def test_train_refuses_an_adapted_encoder_of_other_splits(tmp_path):
    encoder = _adapted(tmp_path, seed=14, split_method="cluster", select_fraction=0.1)
    with pytest.raises(ValueError, match="seed=13 \\(adapted with 14\\)"):
        train(TrainConfig(data_path=tmp_path, output_dir=tmp_path / "out", base_encoder=encoder, seed=13),
              progress=False)
    with pytest.raises(ValueError, match="split_method"):
        check_dapt_splits(encoder, 14, "exact", 0.1)
    with pytest.raises(ValueError, match="select_fraction"):
        check_dapt_splits(encoder, 14, "cluster", 0.2)
    check_dapt_splits(encoder, 14, "cluster", 0.1)
    check_dapt_splits(encoder, 14, "cluster", 0.0)  # no selection split: the same dev rows, selected on
    check_dapt_splits(tmp_path, 99, "exact", 0.3)  # not an adapted encoder: nothing to check


def test_an_older_record_means_the_splits_dapt_texts_always_used(tmp_path):
    encoder = _adapted(tmp_path, seed=13)
    assert dapt_split_settings(encoder) == {"seed": 13, "split_method": "cluster", "select_fraction": 0.1}
    assert {"split_method", "select_fraction"} <= set(DaptConfig().__dict__)  # recorded by adapt from now on


def test_url_placeholder_pieces_are_never_masked():
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(str(default_base_encoder()), local_files_only=True)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.0)  # mask every maskable token
    rows = ["acme shares rise [url] see [url] now", "no link here"]
    torch.manual_seed(0)
    batch = masked_batch(tokenizer, collator, rows, 32)
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(rows[0])["input_ids"])
    assert pieces[5:9] == ["[", "ur", "##l", "]"]
    chosen = (batch["labels"][0] != -100).tolist()
    assert not any(chosen[5:9]) and not any(chosen[10:14])  # both placeholders left alone
    assert all(chosen[1:5]) and chosen[9] and chosen[14] and not chosen[0] and not chosen[15]
    assert (batch["labels"][1] != -100).sum() == 3 and (batch["labels"][1, 5:] == -100).all()  # padding never
