"""The roofline's work count must equal what torch actually multiplies, or its ceilings mean nothing."""

from __future__ import annotations

import pytest

from benchmarks.roofline import EncoderShape, batches_macs, engine_batches


@pytest.mark.parametrize("width", [5, 17])
def test_macs_match_torch_flop_counter(width):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    ids = torch.ones((3, width), dtype=torch.long)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    shape = EncoderShape.from_config(config.to_dict())
    assert counter.get_total_flops() == 2 * shape.macs(3, width)


def test_engine_batches_follow_the_length_sorted_plan():
    lengths = [10, 3, 7, 3, 12]
    assert engine_batches(lengths, batch_size=2, max_tokens=None) == [(2, 12), (2, 7), (1, 3)]
    # the token cap cuts the long batch shorter
    assert engine_batches(lengths, batch_size=4, max_tokens=20) == [(1, 12), (2, 10), (2, 3)]


def test_padding_costs_what_it_pads():
    shape = EncoderShape(layers=6, hidden=384, intermediate=1536)
    # the benchmark counts the padded baselines as texts x one padded text: linear in rows
    padded = batches_macs(shape, [(4, 64), (4, 64), (2, 64)])
    assert padded == 10 * shape.macs(1, 64)
    # a sorted plan of short texts does a fraction of the padded work
    assert batches_macs(shape, engine_batches([16] * 10, 4, None)) < padded / 3.9
