"""Recorded benchmark commands must rerun as recorded: arguments with spaces, ``#``, ``;`` or parentheses are
quoted (a plain ``" ".join(sys.argv)`` turned ``--section "## x"`` into a shell comment)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_engine import recorded_command

ROOT = Path(__file__).resolve().parents[2]
ARGVS = [
    ["--n", "600", "--section", "## bench_engine --request-size 32", "--request-size", "32"],
    ["--write", "--note", "final bundled model; machine otherwise mostly idle (one helper editing code)"],
    ["--data", "../shared/data/it's here.csv", "--threads", "2"],
    [],
]


@pytest.mark.parametrize("argv", ARGVS)
def test_recorded_command_round_trips_through_the_shell(argv: list[str]) -> None:
    command = recorded_command("benchmarks/bench_engine.py", argv)
    assert shlex.split(command) == ["python", "benchmarks/bench_engine.py", *argv]
    # and through a real shell: what bash hands the program is what was run
    echoed = subprocess.run(["bash", "-c", command.replace("python", "printf '%s\\n'", 1)], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert echoed == ["benchmarks/bench_engine.py", *argv]


@pytest.mark.parametrize("script", ["bench_engine.py", "bench_lora.py", "bench_text.py"])
def test_benchmarks_record_their_command_quoted(script: str) -> None:
    source = (ROOT / "benchmarks" / script).read_text()
    assert not re.search(r"""["']\s?["']\.join\(\s*(\[""\]\s*\+\s*)?sys\.argv""", source), \
        f"{script} records sys.argv joined without quoting"
    assert "recorded_command(" in source


@pytest.mark.parametrize("script", ["bench_engine.py", "bench_onnx_precision.py"])
def test_a_data_path_that_does_not_exist_is_an_error_not_generated_texts(script: str, tmp_path: Path) -> None:
    """A mistyped ``--data`` once timed generated headlines (12.8 tokens) and labelled them with the stream's path."""
    missing = tmp_path / "stocknet_stream" / "tweets.csv.gz"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--data", str(missing), "--n", "3"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"--data {missing}: no such file" in run.stderr
