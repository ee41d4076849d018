"""``bench_gate.py --pair``'s guard slices: the retrain default under ``--data`` unless ``--slice`` names others, and
they vote: a challenger clearly worse on PhraseBank's all-agree rows is rejected even when no whole set sees it."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_gate import guard_slices
from training.gate import GateConfig, evaluate_gate
from training.retrain import candidate

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "models" / "default_model"
CLEAR = [("Operating profit rose sharply from the previous year", "positive"),
         ("Net sales increased by 25 percent and the margin improved", "positive"),
         ("The company swung to a record quarterly profit", "positive"),
         ("Quarterly revenue beat expectations and the dividend was raised", "positive"),
         ("The company reported a large net loss and cut its forecast", "negative"),
         ("Sales fell sharply and the firm announced layoffs", "negative"),
         ("Operating profit decreased to a loss of EUR 5 million", "negative"),
         ("The shares plunged after the profit warning", "negative")]
COPIES = 15  # 120 clear rows: above the gate's min_guard_examples (100), so the slice votes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    path = root / "financial_phrasebank" / "valid.csv"
    path.parent.mkdir()
    rows = [f'"{text} ({i})",{label},100' for i in range(COPIES) for text, label in CLEAR]
    rows += ["Profit rose a little,negative,50", "Sales were flat,positive,50"]  # outside the slice
    path.write_text("text,label,agreement\n" + "\n".join(rows) + "\n")
    return root


def _args(data_dir: Path, **overrides) -> argparse.Namespace:
    return argparse.Namespace(**{"data": str(data_dir), "slice": [], "no_guards": False, **overrides})


def test_guard_slices_are_the_retrain_default_unless_named_or_switched_off(data_dir):
    default = guard_slices(_args(data_dir))
    assert list(default) == ["guard:financial_phrasebank/valid.csv agreement=100"]
    assert len(default["guard:financial_phrasebank/valid.csv agreement=100"]) == COPIES * len(CLEAR)
    named = guard_slices(_args(data_dir, slice=[[str(data_dir / "financial_phrasebank" / "valid.csv"), "agreement=50"]]))
    assert [len(v) for v in named.values()] == [2] and next(iter(named)).endswith("valid.csv agreement=50")
    assert guard_slices(_args(data_dir, no_guards=True)) == {}


def _swapped(tmp_path: Path) -> Path:
    """The bundled weights with negative and positive swapped in the label list: every clear row flips."""
    swapped = tmp_path / "swapped"
    shutil.copytree(BUNDLED, swapped)
    info = json.loads((swapped / "artifact.json").read_text())
    info["labels"]["sentiment"] = list(reversed(info["labels"]["sentiment"]))
    (swapped / "artifact.json").write_text(json.dumps(info))
    return swapped


def test_the_guard_slice_votes_in_the_verdict(data_dir, tmp_path):
    sets = guard_slices(_args(data_dir))
    texts = [ex.text for exs in sets.values() for ex in exs[:32]]
    champion = candidate("bundled", BUNDLED, sets, texts, smoke=False)
    name = "guard_macro_f1[guard:financial_phrasebank/valid.csv agreement=100/sentiment]"
    same = evaluate_gate(champion, candidate("same", BUNDLED, sets, texts, smoke=True), GateConfig())
    check = next(c for c in same.checks if c.name == name)
    assert check.votes and check.passed and same.comparisons[name[len("guard_macro_f1["):-1]]["diff"] == 0
    worse = evaluate_gate(champion, candidate("swapped", _swapped(tmp_path), sets, texts, smoke=True), GateConfig())
    check = next(c for c in worse.checks if c.name == name)
    assert check.votes and not check.passed and check.challenger < check.champion


def test_an_unreadable_guard_slice_is_a_usage_error_before_any_scoring(data_dir, tmp_path):
    for extra, message in ((["--slice", str(data_dir / "financial_phrasebank" / "valid.csv"), "agreement"], "--slice"),
                           (["--data", str(tmp_path)], "--data")):
        done = subprocess.run([sys.executable, "benchmarks/bench_gate.py", "--pair", str(BUNDLED), str(BUNDLED), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "PASSED" not in done.stdout, done.stderr
