"""After ``marketmood models rollback`` the rejected version's scores leave every sentiment panel at once, and a
candidate's scores never reach one (issue 11, defect 4): the panels read ``current_scores()`` only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from storage import dashboards as sql
from storage import registry
from storage.articles import upsert_scored_batch
from storage.db import make_engine
from training.registry import rollback

TOPIC = "Earnings"


def test_rollback_takes_the_rejected_versions_scores_off_the_charts(db_url: str, make_scored, run_on) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            now = conn.execute(select(func.now())).scalar_one()
            at = now - timedelta(hours=3)
            for version in ("v1", "v2", "v3"):
                registry.insert_version(conn, version=version, artifact=b"", artifact_sha256="0" * 64)
            registry.set_alias(conn, "v1", by="tests", reason="first")
            upsert_scored_batch(conn, [make_scored("x", "Acme misses estimates", at, ["ACME"], TOPIC, "negative", 0.9)])
        with engine.begin() as conn:
            registry.set_alias(conn, "v2", by="tests", reason="promote v2")
            upsert_scored_batch(conn, [
                make_scored("x", "Acme misses estimates", at, ["ACME"], TOPIC, "positive", 0.05, version="v2"),
                make_scored("y", "Acme guidance note", at, ["ACME"], "Analyst Update", "positive", 0.05, version="v2"),
            ])
        with engine.begin() as conn:  # a candidate (never in service) re-scores x later: never shown
            upsert_scored_batch(conn, [make_scored("x", "Acme misses estimates", at, ["ACME"], TOPIC, "neutral",
                                                   0.3, version="v3")])
        t_from, t_to = now - timedelta(days=1), now + timedelta(minutes=5)

        def index() -> dict[str, float]:
            _, rows = run_on(db_url, sql.SENTIMENT_INDEX_BY_TOPIC, t_from, t_to, interval=timedelta(days=7))
            return {r["metric"]: r["value"] for r in rows if r["value"] is not None}

        assert index() == {TOPIC: pytest.approx(0.8 - 0.05), "Analyst Update": pytest.approx(0.8 - 0.05)}
        assert len(run_on(db_url, sql.MOST_POSITIVE_HEADLINES, t_from, t_to)[1]) == 2

        assert rollback(engine, by="oncall") == ("v2", "v1")
        # x is back to v1's negative score; y was scored only by the rejected v2 and leaves the charts.
        assert index() == {TOPIC: pytest.approx(0.05 - 0.9)}
        assert run_on(db_url, sql.MOST_POSITIVE_HEADLINES, t_from, t_to)[1] == []
        (negative,) = run_on(db_url, sql.MOST_NEGATIVE_HEADLINES, t_from, t_to)[1]
        assert negative["headline"] == "Acme misses estimates"
        _, changes = run_on(db_url, sql.MODEL_CHANGES, t_from, t_to)
        assert [r["version"] for r in changes] == ["v1", "v2", "v1"]
    finally:
        engine.dispose()
