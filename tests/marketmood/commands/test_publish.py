"""``marketmood publish --retime``: a retimed replay is a run, so replaying a file again is stored, not refused.

The worker stores an id once and dead-letters a copy whose content differs (``conflicting_duplicate``, first
write wins); a retimed record's time is part of its content. With the file's own ids a second retimed replay
of a file was dead-lettered whole. These tests run the real command into real tansu and the real worker
(in process, with a fixed classifier: what is tested is the ids and the writes, not the model) on real
PostgreSQL, and end with the delivery invariant checker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from marketmood.cli import cli
from marketmood.settings import REPO_ROOT
from marketmood.commands.publish import _moment, _resume_hint
from marketmood.tools.invariant import check_invariant
from models.prediction import Prediction, StaticProvider
from storage.db import make_engine
from streams.sources import in_run, record_time, retime, run_id, since
from tests.streams.harness import consume_all, run_until_committed

pytestmark = pytest.mark.timeout(300)

N = 6


class Neutral:
    """Every text neutral: the ids and the database writes are under test, not the model."""

    model_version = "fixed-v1"

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return [Prediction("Markets", 0.9, "neutral", 0.1, 0.8, 0.1, self.model_version) for _ in texts]


def _history(path: Path) -> Path:
    base = datetime(2014, 3, 3, 9, tzinfo=timezone.utc)
    path.write_text("".join(json.dumps({
        "id": f"h-{i}", "title": f"Company {i} reports quarterly results", "source": "test",
        "published_at": (base + timedelta(minutes=i)).isoformat(), "tickers": ["AAPL"], "lang": "en",
    }) + "\n" for i in range(N)))
    return path


def _stored_ids(db_url: str) -> list[str]:
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT id FROM articles ORDER BY id")).scalars())
    finally:
        engine.dispose()


def test_a_second_retimed_replay_is_stored_beside_the_first_and_a_repeated_run_is_absorbed(
    make_topics, kafka_bootstrap: str, db_url: str, tmp_path: Path
) -> None:
    """Run A, run B (another start) and run A again: B's records are stored, not dead-lettered as conflicting
    copies of A's; A repeated (at-least-once) adds no row."""
    topics = make_topics(1)
    path = _history(tmp_path / "history.jsonl")
    start_a = (datetime.now(timezone.utc) - timedelta(days=1)).replace(microsecond=0)  # in the past: sent at once
    start_b = start_a + timedelta(hours=1)
    for start in (start_a, start_b, start_a):
        result = CliRunner().invoke(cli, ["publish", str(path), "--retime", start.isoformat(), "--speed", "60",
                                          "--bootstrap", kafka_bootstrap, "--topic", topics.raw])
        assert result.exit_code == 0, result.output
        assert f"published {N} messages" in result.output
    worker = run_until_committed(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                                 provider=StaticProvider(Neutral()), records=3 * N)
    report = check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)
    assert report.ok, report.summary()
    assert dict(report.dead_by_reason) == {}, report.summary()
    assert report.stored == 3 * N and report.duplicate_rows == 0
    runs = [run_id(start_a), run_id(start_b)]
    assert _stored_ids(db_url) == sorted(f"h-{i}@{run}" for i in range(N) for run in runs)  # 2 runs, once each



def test_an_interrupted_retimed_replay_resumed_as_its_hint_says_is_one_run_stored_once(
    make_topics, kafka_bootstrap: str, db_url: str, tmp_path: Path
) -> None:
    """Ctrl-C a live retimed replay, rerun it with what the hint says: every article is stored once, in one
    run, and the record sent twice is absorbed. With ``--start-at`` alone, the rerun's ``--retime now`` gave
    that record a new time under its old id: dead-lettered as a conflicting copy."""
    topics = make_topics(1)
    n = 40
    base = datetime(2014, 3, 3, 9, tzinfo=timezone.utc)
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps({"id": f"h-{i}", "title": f"Company {i} reports results", "source": "test",
                                        "published_at": (base + timedelta(seconds=i)).isoformat()}) + "\n"
                            for i in range(n)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env["MARKETMOOD_HOME"] = str(tmp_path / "home")
    args = [sys.executable, "-m", "marketmood.cli", "publish", str(path), "--bootstrap", kafka_bootstrap,
            "--topic", topics.raw, "--retime", "now", "--speed", "4"]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        consume_all(kafka_bootstrap, topics.raw, 3, timeout_s=120)  # under way, live (4 records a second)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    found = re.search(r"interrupted: (\d+) of (\d+) messages .* acknowledged; to resume, rerun with (.*)$", err, re.M)
    assert found, err[-2000:]
    sent = int(found[1])
    assert 3 <= sent == int(found[2]) < n
    rerun = subprocess.run([*args, *shlex.split(found[3])], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"published {n - sent + 1} messages" in rerun.stdout  # the last one sent goes again
    worker = run_until_committed(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                                 provider=StaticProvider(Neutral()), records=n + 1)
    report = check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)
    assert report.ok and dict(report.dead_by_reason) == {}, report.summary()
    ids = _stored_ids(db_url)
    assert len(ids) == n and len({i.rsplit("@", 1)[1] for i in ids}) == 1  # one run, every article once

def test_a_retimed_replay_resumed_as_its_hint_says_resends_identical_records() -> None:
    """The resume hint of an interrupted retimed replay: the records it sends again are the stored ones
    exactly (same ids, same times), so the worker absorbs them; with ``--start-at`` alone they were new times
    under the old ids (dead-lettered as conflicting) or, under a new run, the same articles stored twice."""
    base = datetime(2014, 3, 3, 9, tzinfo=timezone.utc)
    history = [{"id": f"h-{i}", "title": f"Headline {i}", "published_at": (base + timedelta(seconds=7 * i)).isoformat()}
               for i in range(40)]
    start, speed = datetime(2026, 12, 1, 9, 0, 0, tzinfo=timezone.utc), 24.0

    def replay(records: list[dict[str, object]], at: datetime, run: str) -> list[dict[str, object]]:
        return list(in_run(retime(records, start=at, speed=speed), run))

    first = replay(history, start, run_id(start))
    sent = first[:17]  # interrupted after 17
    hint = _resume_hint(sent[-1], run_id(start), speed)
    args = shlex.split(hint.split("rerun with", 1)[1])
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert set(options) == {"--start-at", "--retime", "--run-id", "--speed"} and options["--speed"] == "24"
    start_at, at = (_moment(None, None, options[o]) for o in ("--start-at", "--retime"))  # type: ignore[arg-type]
    assert start_at is not None and at is not None  # as the command parses them
    resumed = replay(list(since(history, start_at)), at, options["--run-id"])
    assert resumed[0] == sent[-1]  # the overlap: the same article, byte for byte (so stored once)
    assert [r["id"] for r in resumed] == [r["id"] for r in first[16:]]  # then the rest of the same run
    for again, original in zip(resumed, first[16:], strict=True):  # on the same time mapping (to rounding)
        assert abs(record_time(again) - record_time(original)) <= timedelta(milliseconds=1)  # type: ignore[operator]


def test_run_id_is_a_retime_option_and_must_be_a_usable_name(tmp_path: Path) -> None:
    path = _history(tmp_path / "history.jsonl")
    plain = CliRunner().invoke(cli, ["publish", str(path), "--run-id", "r1", "--bootstrap", "127.0.0.1:1"])
    assert plain.exit_code == 2 and "--run-id needs --retime" in plain.output, plain.output
    bad = CliRunner().invoke(cli, ["publish", str(path), "--retime", "now", "--run-id", "a@b",
                                   "--bootstrap", "127.0.0.1:1"])
    assert bad.exit_code == 2 and "run id 'a@b'" in bad.output, bad.output

