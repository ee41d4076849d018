"""The worker's DB stage on real PostgreSQL: a row the database refuses is isolated, the rest committed.

The refusal is PostgreSQL's own: the scores table's CHECK constraint rejects an impossible sentiment.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from marketmood.settings import load_settings
from models.prediction import Prediction, StaticProvider
from storage.db import make_engine
from streams.processing import Scored, validate_batch
from streams.worker import PipelineWorker
from tests.streams.test_processing import msg, rec


def _prediction(sentiment: str) -> Prediction:
    return Prediction("Markets", 0.9, sentiment, 0.1, 0.8, 0.1, "test-version")


def test_refused_row_is_isolated_and_the_rest_of_the_batch_is_committed(db_url):
    plan = validate_batch([rec(i, msg(f"a{i}", f"Headline number {i}")) for i in range(3)])
    sentiments = {"a0": "neutral", "a1": "furious", "a2": "negative"}  # "furious" breaks ck_scores_sentiment
    scored = [Scored(a, _prediction(sentiments[a.message.id])) for a in plan.accepted]
    engine = make_engine(db_url)
    worker = PipelineWorker(load_settings(), bootstrap="127.0.0.1:9", db_engine=engine,
                            provider=StaticProvider(None))  # type: ignore[arg-type] - the DB stage only
    try:
        refused = asyncio.run(worker._write_with_retry(scored))
        with engine.connect() as conn:
            articles = conn.execute(text("SELECT id FROM articles ORDER BY id")).scalars().all()
            scores = conn.execute(text("SELECT article_id FROM scores ORDER BY article_id")).scalars().all()
    finally:
        worker.close()
        engine.dispose()
    assert [(s.accepted.message.id, "ck_scores_sentiment" in why) for s, why in refused] == [("a1", True)]
    assert articles == ["a0", "a2"] and scores == ["a0", "a2"]
