"""The GPU benchmark's CPU dry run: a GPU session gets one short call, so the script must already work here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import tiny_data  # noqa: F401 - the fixture, shared with the training tests

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_cpu_run_records_every_step(tmp_path, tiny_data):  # noqa: F811
    arch = tmp_path / "tiny_config.json"
    arch.write_text(json.dumps({"model_type": "bert", "vocab_size": 3000, "hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 2, "num_attention_heads": 4}))
    out = tmp_path / "results.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_cuda.py"), "--quick", "--device", "cpu",
                    "--threads", "1", "--data", str(tiny_data), "--work", str(tmp_path / "work"), "--out", str(out),
                    "--arch-config", str(arch), "--steps", "train_gold", "serve", "oom_split", "arch"],
                   check=True, cwd=REPO, timeout=900, capture_output=True)
    results = json.loads(out.read_text())

    trained = results["train_gold"]
    assert trained["recipe"]["device"] == "cpu" and trained["wall_s"] > 0
    assert {"fp32", "cpu_int8"} <= set(trained["dev"]["phrasebank"])
    serve = results["serve"]
    assert {run["batch_size"] for run in serve["runs"]} == {8, 32}
    assert all(run["end_to_end_texts_per_s"] > 0 and run["forward_texts_per_s"] > 0 for run in serve["runs"])
    assert serve["onnx_int8_cpu"]["end_to_end_texts_per_s"] > 0
    assert "skipped" in results["oom_split"]  # a real out-of-memory error needs CUDA
    (tiny,) = results["arch"]
    assert tiny["layers"] == 2 and tiny["fp32_texts_per_s"] > 0
