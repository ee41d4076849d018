"""scripts/distill_recipe.sh: every command it would run parses against the real CLI (options drift otherwise)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import click

from marketmood.cli import cli

REPO = Path(__file__).resolve().parents[2]


def parse(args: list[str]) -> click.Command:
    """Walk ``marketmood ARGS`` down to its leaf command and parse the leaf's options (types and all)."""
    ctx = click.Context(cli, info_name="marketmood")
    command: click.Command | None = cli
    while isinstance(command, click.Group):
        name, *args = args
        command = command.get_command(ctx, name)
        assert command is not None, f"no command {name!r}"
        ctx = click.Context(command, info_name=name, parent=ctx)
    leaf = command.make_context(command.name, list(args), parent=ctx.parent)
    assert not leaf.args, f"unparsed arguments {leaf.args}"
    return command


def test_every_stage_parses_and_the_gate_closes_the_run(tmp_path):
    art = tmp_path / "art"
    for folder in ("mpnet-base", "teacher-sent", "teacher-topic2"):  # --base-encoder/--teacher must exist to parse
        (art / folder).mkdir(parents=True)
    out = subprocess.run(["bash", str(REPO / "scripts/distill_recipe.sh"), str(art)], capture_output=True, text=True,
                         check=True, env={**os.environ, "DRY_RUN": "1"}, cwd=REPO).stdout
    commands = [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]
    assert [c[:2] for c in commands] == [["marketmood", "teacher"]] + [["marketmood", "train"]] * 3 + [
        ["python", "benchmarks/bench_gate.py"]]
    names = [parse(c[1:]).name for c in commands[:-1]]
    assert names == ["fetch", "train", "train", "train"]
    student = commands[3]
    assert student[student.index("--teacher") + 1] == str(art / "teacher-sent")
    assert student[student.index("--topic-teacher") + 1] == str(art / "teacher-topic2")
    gate_help = subprocess.run([sys.executable, "benchmarks/bench_gate.py", "--help"], capture_output=True, text=True,
                               check=True, cwd=REPO).stdout
    assert "--pair" in gate_help and "--unseen" in gate_help
    assert commands[-1][-1] == "--unseen" and commands[-1][-2] == str(art / "student-kd3")
