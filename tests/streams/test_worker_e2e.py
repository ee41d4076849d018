"""End to end: real tansu, real PostgreSQL, the real engine, the worker as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketmood.settings import TopicSettings
from tests.streams.harness import (
    Db,
    WorkerProcess,
    article,
    consume_all,
    produce,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


def _worker(kafka_bootstrap: str, db_url: str, topics: TopicSettings, tmp_path: Path, model_path: Path | None,
            **kw) -> WorkerProcess:
    return WorkerProcess(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, home=tmp_path / "home",
                         model_path=model_path, **kw)


def test_valid_messages_are_stored_once_and_published(
    kafka_bootstrap: str, db_url: str, topic_names: TopicSettings, tmp_path: Path, model_path: Path | None
) -> None:
    n = 40
    msgs = [article(i) for i in range(n)]
    produce(kafka_bootstrap, topic_names.raw, msgs, keys=[m["id"].encode() for m in msgs])
    # the same article id again (a scraper re-sending it) must not add a row
    produce(kafka_bootstrap, topic_names.raw, [article(3), article(7)], keys=[b"a-3", b"a-7"])
    worker = _worker(kafka_bootstrap, db_url, topic_names, tmp_path, model_path)
    db = Db(db_url)
    try:
        wait_until(lambda: db.articles() >= n, 120, what=f"{n} articles\n{worker.log()[-3000:]}")
        scored = consume_all(kafka_bootstrap, topic_names.scored, n + 2, timeout_s=30)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    assert db.articles() == n
    assert db.scores() == n
    assert db.ids() == {m["id"] for m in msgs}
    events = [json.loads(r.value) for r in scored]
    assert {e["id"] for e in events} == {m["id"] for m in msgs}
    assert len(events) >= n  # at-least-once: the re-sent ids may be re-published
    first = events[0]
    assert first["sentiment"] in {"negative", "neutral", "positive"}
    assert abs(sum(first["probabilities"].values()) - 1) < 1e-3
    assert abs(first["score"] - (first["probabilities"]["positive"] - first["probabilities"]["negative"])) < 1e-6
    assert first["model_version"] and first["scored_at"] and first["published_at"]
    assert consume_all(kafka_bootstrap, topic_names.deadletter, 0, timeout_s=1) == []
    db.close()
