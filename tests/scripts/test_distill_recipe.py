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


def _shared_labels(soft: Path) -> Path:
    """A soft-label folder holding both files the script looks for (empty: only their presence is read)."""
    soft.mkdir()
    for name in ("teacher-mpnet-sent-1ep-blend-tw2-xeon.npz", "teacher-mpnet-topic-2ep-zen4.npz"):
        (soft / name).touch()
    return soft


def test_every_stage_parses_and_the_gate_closes_the_run(tmp_path):
    art, soft = tmp_path / "art", tmp_path / "soft"
    for folder in ("mpnet-base", "teacher-sent", "teacher-sent-tw2", "teacher-topic2"):  # must exist to parse
        (art / folder).mkdir(parents=True)
    commands = _dry_run(art, soft)
    assert [c[:3] for c in commands[:-1]] == [["marketmood", "teacher", "fetch"]] + [["marketmood", "train", "--base-encoder"]] * 3 + [
        ["marketmood", "train", "--out"]] * 2 + [["marketmood", "teacher", "share-labels"]] * 3 + [
        ["marketmood", "teacher", "blend-labels"], ["marketmood", "train", "--out"]]
    assert commands[-1][:2] == ["python", "benchmarks/bench_gate.py"]
    teacher_tw2 = commands[2]
    scoring, scoring_tw2, share_sent, share_tw2, share_topic, blend, student = commands[4:11]
    # the caches the scoring runs write and the files the blend and the student read must exist to parse
    for path in (share_sent[3], share_tw2[3], share_topic[3], share_sent[4], share_tw2[4], share_topic[4], blend[3]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
    names = [parse(c[1:]).name for c in commands[:-1]]
    assert names == ["fetch", "train", "train", "train", "train", "train", "share-labels", "share-labels",
                     "share-labels", "blend-labels", "train"]
    assert teacher_tw2[teacher_tw2.index("--out") + 1] == str(art / "teacher-sent-tw2")
    assert "tweet_sentiment=2" in teacher_tw2 and "tweet_sentiment=2" not in commands[1]
    assert scoring[scoring.index("--teacher") + 1] == str(art / "teacher-sent")
    assert scoring[scoring.index("--topic-teacher") + 1] == str(art / "teacher-topic2")
    assert scoring_tw2[scoring_tw2.index("--teacher") + 1] == str(art / "teacher-sent-tw2")
    assert [c[-2:] for c in (share_sent, share_tw2, share_topic)] == [["--head", "sentiment"]] * 2 + [["--head", "topic"]]
    assert str(art / "scoring-run-tw2") in share_tw2[3] and str(art / "scoring-run") + "/" in share_sent[3]
    # the sentiment file the student distils is the blend of the two sentiment teachers' shared labels
    assert blend[3] == student[student.index("--soft-labels") + 1] and str(soft) in blend[3]
    assert blend[4:6] == [share_tw2[4], share_sent[4]] and blend[-2:] == ["--head", "sentiment"]
    assert student[student.index("--topic-soft-labels") + 1] == share_topic[4] and str(soft) in share_topic[4]
    # the scoring runs see the student's transfer set: same data options after the teachers
    data = scoring[scoring.index("--max-length"):]
    assert scoring_tw2[scoring_tw2.index("--max-length"):] == data and "--unlabeled" in data
    assert student[student.index("--max-length"):student.index("--max-length") + len(data)] == data
    gate_help = subprocess.run([sys.executable, "benchmarks/bench_gate.py", "--help"], capture_output=True, text=True,
                               check=True, cwd=REPO).stdout
    assert "--pair" in gate_help and "--unseen" in gate_help
    assert commands[-1][-1] == "--unseen" and commands[-1][-2] == str(art / "student")


def _options(command: list[str]) -> dict[str, list[str]]:
    """``--name value`` pairs (flags map to []), repeated options collected (order-free); paths and the run's
    identity (--out, --version) and --threads left out: they name the machine, not the recipe."""
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(command):
        name = command[i]
        value = command[i + 1] if i + 1 < len(command) and not command[i + 1].startswith("--") else None
        if name not in ("--out", "--version", "--threads"):
            options.setdefault(name, []).extend([] if value is None else [Path(value).name if "/" in value else value])
        i += 2 if value is not None else 1
    return {name: sorted(values) for name, values in options.items()}


def test_the_student_stage_is_the_bundled_models_command(tmp_path):
    """The script ends in the recipe of the model the repo ships, not in an older one (it did, for two sessions)."""
    card = (REPO / "models/default_model/MODEL_CARD.md").read_text()
    shipped = next(shlex.split(line.split("`")[1]) for line in card.splitlines() if line.startswith("- Command: `"))
    commands = _dry_run(tmp_path / "art", _shared_labels(tmp_path / "soft"))
    assert _options(commands[0][2:]) == _options(shipped[2:])
    assert commands[0][:2] == shipped[:2] == ["marketmood", "train"]


def test_shared_soft_labels_skip_the_teachers(tmp_path):
    commands = _dry_run(tmp_path / "art", _shared_labels(tmp_path / "soft"))
    assert [c[1] for c in commands[:-1]] == ["train"] and commands[-1][1] == "benchmarks/bench_gate.py"
    assert parse(commands[0][1:]).name == "train" and "--teacher" not in commands[0]
