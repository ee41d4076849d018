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


def _dry_run(art: Path, soft: Path) -> list[list[str]]:
    out = subprocess.run(["bash", str(REPO / "scripts/distill_recipe.sh"), str(art)], capture_output=True, text=True,
                         check=True, env={**os.environ, "DRY_RUN": "1", "SOFT_LABELS_DIR": str(soft)}, cwd=REPO).stdout
    return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def test_every_stage_parses_and_the_gate_closes_the_run(tmp_path):
    art, soft = tmp_path / "art", tmp_path / "soft"
    for folder in ("mpnet-base", "teacher-sent", "teacher-topic2"):  # --base-encoder/--teacher must exist to parse
        (art / folder).mkdir(parents=True)
    commands = _dry_run(art, soft)
    assert [c[:3] for c in commands[:-1]] == [["marketmood", "teacher", "fetch"]] + [["marketmood", "train", "--base-encoder"]] * 2 + [
        ["marketmood", "train", "--out"]] + [["marketmood", "teacher", "share-labels"]] * 2 + [["marketmood", "train", "--out"]]
    assert commands[-1][:2] == ["python", "benchmarks/bench_gate.py"]
    scoring, share_sent, share_topic, student = commands[3:7]
    # the caches the scoring run writes and the shared files the student reads must exist to parse
    for path in (share_sent[3], share_topic[3], share_sent[4], share_topic[4]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
    names = [parse(c[1:]).name for c in commands[:-1]]
    assert names == ["fetch", "train", "train", "train", "share-labels", "share-labels", "train"]
    assert scoring[scoring.index("--teacher") + 1] == str(art / "teacher-sent")
    assert scoring[scoring.index("--topic-teacher") + 1] == str(art / "teacher-topic2")
    assert share_sent[-2:] == ["--head", "sentiment"] and share_topic[-2:] == ["--head", "topic"]
    assert student[student.index("--soft-labels") + 1] == share_sent[4] and str(soft) in share_sent[4]
    assert student[student.index("--topic-soft-labels") + 1] == share_topic[4]
    # the scoring run sees the student's transfer set: same data options after the teachers
    data = student[student.index("--max-length"):student.index("--resume")]
    assert scoring[scoring.index("--max-length"):] == data and "--unlabeled" in data
    gate_help = subprocess.run([sys.executable, "benchmarks/bench_gate.py", "--help"], capture_output=True, text=True,
                               check=True, cwd=REPO).stdout
    assert "--pair" in gate_help and "--unseen" in gate_help
    assert commands[-1][-1] == "--unseen" and commands[-1][-2] == str(art / "student-kd3")


def test_shared_soft_labels_skip_the_teachers(tmp_path):
    art, soft = tmp_path / "art", tmp_path / "soft"
    soft.mkdir()
    for name in ("teacher-mpnet-sent-1ep.npz", "teacher-mpnet-topic-2ep.npz"):
        (soft / name).touch()
    commands = _dry_run(art, soft)
    assert [c[1] for c in commands[:-1]] == ["train"] and commands[-1][1] == "benchmarks/bench_gate.py"
    assert parse(commands[0][1:]).name == "train" and "--teacher" not in commands[0]
