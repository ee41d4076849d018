"""Dataset loading: label mapping, deterministic stratified dev splits, no dev text in train."""

import pytest

from models.labels import sentiment_index
from training.datasets import (
    DatasetError,
    LabeledExample,
    detect_task,
    load_evaluation_csv,
    load_guard_slices,
    load_labeled_sets,
    missing_guard_files,
    parse_where,
    stratified_split,
)


def test_splits_are_deterministic_and_disjoint(tiny_data):
    first = load_labeled_sets(tiny_data, seed=7)
    second = load_labeled_sets(tiny_data, seed=7)
    assert [e.text for e in first.train] == [e.text for e in second.train]
    assert {k: [e.text for e in v] for k, v in first.dev.items()} == {k: [e.text for e in v] for k, v in second.dev.items()}
    dev_texts = {e.text.casefold() for exs in first.dev.values() for e in exs}
    assert not dev_texts & {e.text.casefold() for e in first.train}
    assert set(first.dev) == {"phrasebank", "tweet_sentiment", "tweet_topic"}  # fiqa absent from tiny data
    assert all(v.startswith("sha256:") for v in first.fingerprints.values())


def test_each_row_labels_one_task_and_bearish_maps_to_negative(tiny_data):
    splits = load_labeled_sets(tiny_data)
    tweets = [e for e in splits.train + splits.dev["tweet_sentiment"] if e.source == "tweet_sentiment"]
    assert tweets and all(e.topic is None and e.sentiment is not None for e in tweets)
    plunge = next(e for e in tweets if "plunge" in e.text)
    assert plunge.sentiment == sentiment_index("negative")
    topics = splits.dev["tweet_topic"]
    assert all(e.sentiment is None and e.topic is not None for e in topics)


def test_stratified_split_keeps_every_class():
    examples = [LabeledExample(f"t{i}", sentiment=i % 3) for i in range(30)]
    train, dev = stratified_split(examples, 0.2, seed=1)
    assert len(dev) == 6 and len(train) == 24
    assert sorted(e.sentiment for e in dev) == [0, 0, 1, 1, 2, 2]


def test_detect_task_and_unknown_labels(tmp_path):
    assert detect_task(["Bearish", "neutral"]) == "sentiment"
    assert detect_task(["earnings", "IPO"]) == "topic"
    with pytest.raises(DatasetError, match=r"neither task.*not sentiment: \['Earnings'\], not topic: \['bullish'\]$"):
        detect_task(["bullish", "Earnings"])
    with pytest.raises(DatasetError, match="class codes: write the label names"):
        detect_task(["0", "2"])
    path = tmp_path / "mine.csv"
    path.write_text("text,label\nGood news,POSITIVE\nBad news,Bearish\n")
    task, examples = load_evaluation_csv(path)
    assert task == "sentiment" and [e.sentiment for e in examples] == [2, 0]
    path.write_text("text,label\nGood news,great\n")
    with pytest.raises(DatasetError, match="great"):
        load_evaluation_csv(path, task="sentiment")


def test_missing_columns_and_missing_data_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,sentiment\nx,positive\n")
    with pytest.raises(DatasetError, match="'text' and 'label'"):
        load_evaluation_csv(bad)
    with pytest.raises(DatasetError, match="no labeled datasets"):
        load_labeled_sets(tmp_path / "nothing-here")


def test_excluded_texts_are_never_trained_on(tiny_data):
    splits = load_labeled_sets(tiny_data)
    victim = splits.train[0].text
    excluded = load_labeled_sets(tiny_data, exclude_texts=["  " + victim.upper() + " "])
    assert victim.casefold() not in {e.text.casefold() for e in excluded.train}
    assert len(excluded.train) == len(splits.train) - 1
    assert excluded.dev == splits.dev


def test_excluded_texts_never_choose_the_epoch_either(tiny_data):
    """A retrain's feedback hold-out is passed as exclude_texts: it left train but stayed in the selection split,
    so the challenger chose its epoch and temperature partly on the rows of the vote it then had to win."""
    splits = load_labeled_sets(tiny_data, select_fraction=0.2, split_method="cluster")
    name, rows = next((n, r) for n, r in splits.select.items() if r)
    victim = rows[0].text
    excluded = load_labeled_sets(tiny_data, select_fraction=0.2, split_method="cluster", exclude_texts=[victim])
    assert victim not in {e.text for e in excluded.select[name]}
    assert len(excluded.select[name]) == len(rows) - 1 and excluded.dev == splits.dev


def test_near_duplicate_key_folds_links_entities_mojibake_punctuation():
    from training.datasets import near_duplicate_key

    a = near_duplicate_key("$AAPL beats estimates! https://t.co/AbC123")
    assert a == near_duplicate_key("$aapl beats estimates https://t.co/zzz999")
    assert near_duplicate_key("AT&amp;T it’s up") == near_duplicate_key("AT&T itâ€™s up")
    assert near_duplicate_key("Profit rises") != near_duplicate_key("Profit falls")


def _assert_disjoint(splits):
    from training.datasets import near_duplicate_key

    train_keys = {near_duplicate_key(e.text) for e in splits.train}
    dev_keys = {near_duplicate_key(e.text) for exs in splits.dev.values() for e in exs}
    select_keys = {near_duplicate_key(e.text) for exs in splits.select.values() for e in exs}
    assert not dev_keys & train_keys, sorted(dev_keys & train_keys)[:5]
    assert not select_keys & train_keys and not select_keys & dev_keys


def test_cluster_splits_keep_link_twins_on_one_side(tmp_path):
    from training.datasets import DatasetSpec

    rows = [(f"Stock {i % 40} rallies on news https://t.co/x{i}", "Bullish" if i % 2 else "Bearish") for i in range(400)]
    path = tmp_path / "tw/train.csv"
    path.parent.mkdir()
    path.write_text("text,label\n" + "".join(f'"{t}",{l}\n' for t, l in rows))
    spec = DatasetSpec("tw", "tw/train.csv", "sentiment", dev_fraction=0.2)
    exact = load_labeled_sets(tmp_path, specs=[spec], split_method="exact")
    cluster = load_labeled_sets(tmp_path, specs=[spec], select_fraction=0.2)
    from training.datasets import near_duplicate_key

    leaked = {near_duplicate_key(e.text) for e in exact.dev["tw"]} & {near_duplicate_key(e.text) for e in exact.train}
    assert leaked  # the old exact-text split leaks twins that differ only by their link
    _assert_disjoint(cluster)
    assert cluster.dev["tw"] and cluster.select["tw"] and cluster.train


def test_selection_split_is_disjoint_on_tiny_data(tiny_data):
    splits = load_labeled_sets(tiny_data, select_fraction=0.2)
    assert set(splits.select) == set(splits.dev)
    _assert_disjoint(splits)


def test_no_dev_text_shares_a_key_with_train_on_the_real_data():
    from pathlib import Path

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "twitter_financial_news_topic" / "train.csv").is_file():
        pytest.skip("../shared/data not present")
    _assert_disjoint(load_labeled_sets(data, select_fraction=0.1))


def test_limited_dev_rows_do_not_depend_on_the_selection_split(tiny_data):
    plain = load_labeled_sets(tiny_data, limit_per_dataset=10)
    with_select = load_labeled_sets(tiny_data, limit_per_dataset=10, select_fraction=0.2)
    assert {k: [e.text for e in v] for k, v in plain.dev.items()} == {k: [e.text for e in v] for k, v in with_select.dev.items()}


def test_where_scores_a_subset_of_the_file_itself(tmp_path):
    path = tmp_path / "valid.csv"
    path.write_text("text,label,agreement\nProfit rose,positive,100\nSales fell,negative,50\n"
                    "Costs were flat,neutral,100\n")
    task, examples = load_evaluation_csv(path, where={"agreement": "100"})
    assert task == "sentiment" and [e.text for e in examples] == ["Profit rose", "Costs were flat"]
    assert len(load_evaluation_csv(path)[1]) == 3  # no filter: every row
    with pytest.raises(DatasetError, match=r"no column\(s\) \['agrement'\]"):
        load_evaluation_csv(path, where={"agrement": "100"})
    with pytest.raises(DatasetError, match="no rows with text where"):
        load_evaluation_csv(path, where={"agreement": "75"})


def test_a_byte_order_mark_does_not_hide_the_header(tmp_path):
    """Spreadsheets and pandas' utf-8-sig write a BOM; the header must still read ``text``, not ``\ufefftext``."""
    path = tmp_path / "held_out.csv"
    path.write_text("text,label\nProfit rose,positive\nSales fell,Bearish\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    task, examples = load_evaluation_csv(path)
    assert task == "sentiment" and [e.text for e in examples] == ["Profit rose", "Sales fell"]


def test_short_rows_and_other_encodings_are_clear_errors(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("text,label\nProfit rose,positive\nSales fell\n")
    with pytest.raises(DatasetError, match="line 3: fewer fields than the header"):
        load_evaluation_csv(path)
    path.write_bytes("text,label\nCaf\u00e9 sales rose,positive\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not a UTF-8 CSV file"):
        load_evaluation_csv(path)


def test_parse_where_is_the_one_parser_of_row_filters():
    assert parse_where(["agreement=100", " source =a=b"]) == {"agreement": "100", "source": "a=b"}
    for bad in ("agreement", "=100", " =x"):
        with pytest.raises(DatasetError, match="expected COLUMN=VALUE"):
            parse_where([bad])


def test_guard_slices_read_a_filtered_subset_under_the_data_path_and_refuse_what_cannot_be_applied(tmp_path):
    book = tmp_path / "financial_phrasebank" / "valid.csv"
    book.parent.mkdir()
    book.write_text("text,label,agreement\nprofit soars,positive,100\nsales slip,negative,66\nloss widens,negative,100\n")
    slices = load_guard_slices(tmp_path, ["financial_phrasebank/valid.csv agreement=100", f"{book}"])
    assert list(slices) == ["guard:financial_phrasebank/valid.csv agreement=100", f"guard:{book}"]
    assert [ex.text for ex in slices["guard:financial_phrasebank/valid.csv agreement=100"]] == ["profit soars", "loss widens"]
    assert len(slices[f"guard:{book}"]) == 3  # an absolute path, no filter: the whole file
    assert missing_guard_files(tmp_path, ["financial_phrasebank/valid.csv agreement=100", "missing.csv a=1", " "]) == [
        "missing.csv a=1"]
    for spec, message in (("missing.csv agreement=100", "file not found"),
                          ("financial_phrasebank/valid.csv agreement=75", "no rows"),
                          ("financial_phrasebank/valid.csv annotators=5", "no column"),
                          ("financial_phrasebank/valid.csv agreement", "expected COLUMN=VALUE"),
                          ("   ", "expected 'FILE")):
        with pytest.raises(DatasetError, match=message):
            load_guard_slices(tmp_path, [spec])


def test_corrections_replace_the_base_label_and_never_touch_held_out_rows() -> None:
    """Kept beside the base row, a correction met the dataset's old label at equal weight and was cancelled
    out; one that near-duplicated a dev or selection row trained on what the gate and early stopping judge."""
    from training.datasets import LabeledExample, add_corrections

    base = [LabeledExample("Oil slumps 5%", sentiment=0, source="phrasebank"),
            LabeledExample("Oil slumps 5%", topic=3, source="tweet_topic"),
            LabeledExample("Gold rises", sentiment=2, source="phrasebank")]
    corrections = [LabeledExample("oil slumps 5 % ", sentiment=1, source="feedback"),
                   LabeledExample("Fed holds! https://t.co/x", sentiment=1, source="feedback")]
    held_out = [LabeledExample("Fed holds https://t.co/other", sentiment=1, source="tweet_sentiment")]
    merged = add_corrections(base, corrections, held_out)
    assert [(ex.text, ex.sentiment, ex.topic, ex.source) for ex in merged] == [
        ("Oil slumps 5%", None, 3, "tweet_topic"),  # the other head's row stays
        ("Gold rises", 2, None, "phrasebank"),
        ("oil slumps 5 % ", 1, None, "feedback"),  # the correction, alone for its head
    ]
