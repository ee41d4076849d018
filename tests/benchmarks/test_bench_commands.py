"""Recorded benchmark commands must rerun as recorded: arguments with spaces, ``#``, ``;`` or parentheses are
quoted (a plain ``" ".join(sys.argv)`` turned ``--section "## x"`` into a shell comment)."""

from __future__ import annotations

import re
import shlex
import subprocess
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
