"""The gate benchmark's real pairs: a same-recipe retrain (other init seed, same splits) and a model
trained on a known share of wrong labels. Both knobs must do exactly what they say."""

from training.config import TrainConfig
from training.datasets import LabeledExample, Splits, load_labeled_sets
from training.trainer import _apply_limits

ROWS = [LabeledExample(f"text {i}", sentiment=i % 3, topic=None if i % 2 else i % 20, source="s") for i in range(4000)]


def _config(**kw) -> TrainConfig:
    return TrainConfig(data_path="unused", output_dir="unused", **kw)


def test_label_noise_moves_that_share_of_labels_to_another_class() -> None:
    noisy = _apply_limits(_config(label_noise=0.1), Splits(train=list(ROWS), dev={}))
    assert [ex.text for ex in noisy] == [ex.text for ex in ROWS]
    changed_sent = sum(a.sentiment != b.sentiment for a, b in zip(ROWS, noisy))
    labeled_topic = [(a, b) for a, b in zip(ROWS, noisy) if a.topic is not None]
    changed_topic = sum(a.topic != b.topic for a, b in labeled_topic)
    # Binomial(4000, 0.1) for sentiment and (2000, 0.1) for topic: well inside 4 standard deviations.
    assert abs(changed_sent - 400) < 4 * (4000 * 0.09) ** 0.5
    assert abs(changed_topic - 200) < 4 * (2000 * 0.09) ** 0.5
    # A "flip" never lands on the original class and never invents a label for the other head.
    assert all(b.topic is None for a, b in zip(ROWS, noisy) if a.topic is None)
    assert all(0 <= b.sentiment < 3 and (b.topic is None or 0 <= b.topic < 20) for b in noisy)
    assert _apply_limits(_config(), Splits(train=list(ROWS), dev={})) == ROWS


def test_init_seed_changes_training_randomness_not_the_splits(tiny_data) -> None:
    a, b = _config(seed=13), _config(seed=13, init_seed=14)
    assert (a.training_seed, b.training_seed) == (13, 14)
    split_a = load_labeled_sets(tiny_data, seed=a.seed)
    split_b = load_labeled_sets(tiny_data, seed=b.seed)
    assert split_a.dev == split_b.dev and split_a.train == split_b.train
    noisy_a = _apply_limits(_config(label_noise=0.5), split_a)
    noisy_b = _apply_limits(_config(label_noise=0.5, init_seed=14), split_a)
    assert noisy_a != noisy_b  # the noise is part of the training randomness
