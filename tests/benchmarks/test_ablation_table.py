"""``ablation_table.py`` refuses runs whose dev rows differ: the same dev sizes are not enough (another seed,
split method, selection fraction, labeled files or feedback rows carve other rows of the same sizes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "benchmarks" / "results" / "student-gold"


def _copy(tmp_path: Path, name: str, **config_changes) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for f in ("metrics.json", "training_config.json"):
        shutil.copy(SOURCE / f, folder / f)
    if config_changes:
        record = json.loads((folder / "training_config.json").read_text())
        fingerprints = config_changes.pop("data_fingerprints", None)
        if fingerprints is not None:
            record["data_fingerprints"] = fingerprints
        record["config"].update(config_changes)
        (folder / "training_config.json").write_text(json.dumps(record))
    return folder


def _run(*runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablation_table.py"),
                           *(f"{p.name}={p}" for p in runs)], capture_output=True, text=True, cwd=ROOT)


def test_same_runs_are_comparable(tmp_path: Path) -> None:
    proc = _run(_copy(tmp_path, "a"), _copy(tmp_path, "b"))
    assert proc.returncode == 0, proc.stderr
    assert "| a |" in proc.stdout and "| b |" in proc.stdout


def test_other_seed_with_the_same_dev_sizes_is_refused(tmp_path: Path) -> None:
    proc = _run(_copy(tmp_path, "a"), _copy(tmp_path, "b", seed=99))
    assert proc.returncode != 0
    assert "not comparable" in proc.stderr and "seed" in proc.stderr


@pytest.mark.parametrize("change", [{"split_method": "exact"}, {"select_fraction": 0.2}, {"exclude_texts": 12},
                                    {"extra_examples": 40}])
def test_other_split_settings_are_refused(tmp_path: Path, change: dict) -> None:
    proc = _run(_copy(tmp_path, "a"), _copy(tmp_path, "b", **change))
    assert proc.returncode != 0 and "not comparable" in proc.stderr and next(iter(change)) in proc.stderr


def test_other_labeled_files_are_refused_transfer_files_are_not(tmp_path: Path) -> None:
    prints = json.loads((SOURCE / "training_config.json").read_text())["data_fingerprints"]
    changed = {**prints, "financial_phrasebank/train.csv": "sha256:" + "0" * 64}
    refused = _run(_copy(tmp_path, "a"), _copy(tmp_path, "b", data_fingerprints=changed))
    assert refused.returncode != 0 and "not comparable" in refused.stderr, refused.stderr
    transfer = {**prints, "reuters_news_stream/reuters_news_2011_2018.train.csv.gz": "sha256:" + "1" * 64}
    proc = _run(_copy(tmp_path, "c"), _copy(tmp_path, "d", data_fingerprints=transfer))
    assert proc.returncode == 0, proc.stderr
