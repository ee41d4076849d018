"""``bench_pipeline.py``: ``--sessions`` reaches the worker's environment (the harness drops this process's
MARKETMOOD_* variables), and latency messages never read back are counted, not silently dropped."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.bench_pipeline import latencies_from_events, parse_sessions, worker_env


def test_sessions_reach_the_worker_env() -> None:
    for sessions in ("auto", 1, 2):
        env = worker_env(threads=2, sessions=sessions, log_level="WARNING", batch_max_wait_s=0.5)
        assert env["MARKETMOOD_MODEL__SESSIONS"] == str(sessions)
        assert env["MARKETMOOD_MODEL__THREADS"] == "2"
        assert env["MARKETMOOD_WORKER__BATCH_MAX_WAIT_S"] == "0.5"


def test_parse_sessions() -> None:
    assert parse_sessions("auto") == "auto"
    assert parse_sessions("1") == 1
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_sessions(bad)


def test_missing_events_are_counted() -> None:
    sent = {"a": 100.0, "b": 100.5, "c": 101.0}
    events = [("other", "1970-01-01T00:01:40+00:00"), ("a", "1970-01-01T00:01:40.250000+00:00"),
              ("a", "1970-01-01T00:01:49+00:00"),  # a duplicate event: the first one counts
              ("b", "1970-01-01T00:01:41+00:00")]
    latencies, missing = latencies_from_events(events, sent)
    assert latencies == pytest.approx([0.25, 0.5])
    assert missing == 1


def test_nothing_missing() -> None:
    latencies, missing = latencies_from_events([("a", "1970-01-01T00:00:01+00:00")], {"a": 0.5})
    assert latencies == pytest.approx([0.5]) and missing == 0
