"""What the text preprocessor and the near-duplicate splits change, measured on ../shared/data (issue 12).

    python benchmarks/bench_text.py [--data ../shared/data] [--write]

1. Tokens: for each labeled set, mean tokens per text, texts cut at 64 tokens, ``[UNK]`` tokens and split
   cashtags, with the raw text (identity, the bundled model) and with ``mm-text-v1`` + added tokens as a
   training run would build them (``training.vocab``), on the base tokenizer.
2. Splits: dev texts that share a near-duplicate key with a train text, under the old exact-text split
   and under the cluster split; and the cost of preprocessing per text.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SECTION = "## Text preprocessing and near-duplicate splits (issue 12)"


def main() -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from models.network import default_base_encoder
    from models.preprocess import CASHTAG_RE, IDENTITY, TEXT_V1, preprocess_all
    from models.text_encoder import TextEncoder
    from training.datasets import load_labeled_sets, near_duplicate_key
    from training.vocab import plan_added_tokens

    from bench_engine import recorded_command  # benchmarks/ is on sys.path when run as a script

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    exact = load_labeled_sets(args.data, split_method="exact")
    cluster = load_labeled_sets(args.data, select_fraction=0.1)
    lines = [SECTION, "", f"Command: `{recorded_command('benchmarks/bench_text.py', sys.argv[1:])}` — "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}.", "",
             "| set | texts | tokens/text raw -> v1 | cut at 64 raw -> v1 | [UNK] raw -> v1 | cashtags split into pieces raw -> v1 |",
             "|---|---:|---:|---:|---:|---:|"]
    base = default_base_encoder()
    raw_tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    v1_tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    from tokenizers import AddedToken

    train_v1 = preprocess_all([e.text for e in cluster.train], TEXT_V1)
    added = plan_added_tokens(v1_tok, train_v1, 3, 2000)
    v1_tok.add_tokens([AddedToken(t, normalized=True, single_word=t != "[url]") for t in added])
    encoders = {IDENTITY: TextEncoder.from_tokenizer(raw_tok.backend_tokenizer, 512, IDENTITY),
                TEXT_V1: TextEncoder.from_tokenizer(v1_tok.backend_tokenizer, 512, TEXT_V1)}
    unk = raw_tok.unk_token_id
    by_set: dict[str, list[str]] = {}
    for e in exact.train:
        by_set.setdefault(e.source, []).append(e.text)
    for name, texts in by_set.items():
        stats = {}
        for version, encoder in encoders.items():
            ids = encoder.encode(texts)
            lengths = np.array([len(x) for x in ids])
            tokens = [encoder._tokenizer.id_to_token(i) for x in ids for i in x]
            cashtag_whole = sum(1 for t in tokens if t.startswith("$") and len(t) > 1)
            n_cashtags = sum(len(CASHTAG_RE.findall(t)) for t in texts)
            stats[version] = (lengths.mean(), int((lengths > 64).sum()), sum(x.count(unk) for x in ids),
                              n_cashtags - cashtag_whole)
        r, v = stats[IDENTITY], stats[TEXT_V1]
        lines.append(f"| {name} | {len(texts)} | {r[0]:.1f} -> {v[0]:.1f} | {r[1]} -> {v[1]} | {r[2]} -> {v[2]} | {r[3]} -> {v[3]} |")
    lines += ["", f"Added tokens a full training run would create: {len(added)} (`[url]` + cashtags seen >= 3 times).", ""]
    sample = [e.text for e in exact.train][:5000]
    t0 = time.perf_counter()
    preprocess_all(sample, TEXT_V1)
    per_text_us = (time.perf_counter() - t0) / len(sample) * 1e6
    lines += [f"Preprocessing cost: {per_text_us:.1f} µs per text (mean over {len(sample)} train texts; ASCII texts skip"
              " ftfy and emoji).", "",
              "| dev set | n (exact split) | dev texts with a near-duplicate in train: exact split | n (cluster split) | cluster split |",
              "|---|---:|---:|---:|---:|"]
    for splits_name in exact.dev:
        keys_exact = {near_duplicate_key(e.text) for e in exact.train}
        keys_cluster = {near_duplicate_key(e.text) for e in cluster.train}
        dev_e, dev_c = exact.dev[splits_name], cluster.dev[splits_name]
        lines.append(f"| {splits_name} | {len(dev_e)} | {sum(near_duplicate_key(e.text) in keys_exact for e in dev_e)} |"
                     f" {len(dev_c)} | {sum(near_duplicate_key(e.text) in keys_cluster for e in dev_c)} |")
    lines += ["", f"Selection split sizes (cluster, 10% of train): {({k: len(v) for k, v in cluster.select.items()})}.", ""]
    body = "\n".join(lines) + "\n"
    print(body)
    if args.write:
        from bench_engine import write_section

        write_section(REPO / "BENCHMARKS.md", body, SECTION)


if __name__ == "__main__":
    main()
