"""Feedback one person cannot poison: validation, per-text per-task merge, agreement, reviewers, author caps
(the policy on hand-built rows, then 500 rows from one author through real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage import feedback as feedback_sql
from storage.db import make_engine
from storage.feedback import FeedbackRow
from training.datasets import LabeledExample
from training.feedback_policy import FeedbackPolicy, MergedText, author_budget, merge_feedback, validate_feedback
from training.retrain import split_feedback

T0 = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = FeedbackPolicy(reviewers=frozenset({"rita"}), min_agreeing_authors=2, max_author_share=0.2, author_floor=5)


def _row(i, text, author, *, sentiment=None, topic=None, minutes=0):
    return FeedbackRow(i, text, topic, sentiment, author, "api", T0 + timedelta(minutes=minutes or i))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"article_id": None, "text": "  ", "topic": None, "sentiment": "positive"}, "article_id or a text"),
        # a label on a text with no visible character would teach the model on empty input
        ({"article_id": None, "text": "\u200b\u200d", "topic": None, "sentiment": "positive"}, "article_id or a text"),
        ({"article_id": "a1", "text": None, "topic": None, "sentiment": " "}, "topic and/or a sentiment"),
        ({"article_id": "a1", "text": None, "topic": None, "sentiment": "happy"}, "unknown sentiment label 'happy'"),
        ({"article_id": "a1", "text": None, "topic": "Sports", "sentiment": None}, "unknown topic label 'Sports'"),
    ],
)
def test_validation_refuses_bad_rows_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_feedback(author="ana", **kwargs)


def test_validation_normalizes_labels():
    row = validate_feedback(article_id=None, text=" Oil slumps ", topic="energy | oil", sentiment="Bearish",
                            author=" ana ")
    assert row == {"article_id": None, "text": "Oil slumps", "topic": "Energy | Oil", "sentiment": "negative",
                   "author": "ana"}


def test_one_author_is_not_enough_two_agreeing_are_and_a_reviewer_alone_is():
    rows = [_row(1, "A falls", "ana", sentiment="negative"),
            _row(2, "B rises", "ana", sentiment="positive"), _row(3, "B rises", "bo", sentiment="positive"),
            _row(4, "C flat", "ana", sentiment="neutral"), _row(5, "C flat", "bo", sentiment="positive"),
            _row(6, "D beats", "rita", sentiment="positive"), _row(7, "D beats", "ana", sentiment="negative")]
    merged = merge_feedback(rows, POLICY)
    got = {m.text: (m.sentiment, m.authors, m.reviewed) for m in merged.texts}
    assert got == {"B rises": ("positive", ("ana", "bo"), False), "D beats": ("positive", ("rita",), True)}
    assert merged.pending == 1 and merged.conflicts == 1


def test_labels_merge_per_text_and_task_and_an_author_vote_is_their_latest():
    rows = [_row(1, "Bank fined", "ana", sentiment="negative", topic="Legal | Regulation"),
            _row(2, "bank  FINED", "bo", topic="Legal | Regulation"),  # topic only: keeps ana's sentiment vote
            _row(3, "Bank fined", "bo", sentiment="neutral"),
            _row(4, "Bank fined", "bo", sentiment="negative")]  # bo changed their mind: the latest counts
    (merged,) = merge_feedback(rows, POLICY).texts
    assert (merged.sentiment, merged.topic, merged.authors) == ("negative", "Legal | Regulation", ("ana", "bo"))


def test_the_per_author_cap_bounds_what_one_reviewer_alone_puts_in():
    # rita (a reviewer) labels 100 texts alone; ana and bo agree on 20 others.
    rows = [_row(i, f"rita text {i}", "rita", sentiment="negative") for i in range(100)]
    rows += [_row(200 + 2 * i + k, f"team text {i}", a, sentiment="positive") for i in range(20)
             for k, a in enumerate(("ana", "bo"))]
    merged = merge_feedback(rows, POLICY)
    rita = sum(m.authors == ("rita",) for m in merged.texts)
    assert rita == author_budget(20, POLICY) == 5  # 0.2 / 0.8 x 20 others
    assert rita / len(merged.texts) <= POLICY.max_author_share + 1e-9
    assert merged.dropped_votes == {"rita": 95} and merged.sole_texts == {"rita": 5}
    # texts two authors agree on are not one person's: nothing of ana's or bo's is dropped
    assert sum("ana" in m.authors for m in merged.texts) == 20


def test_two_spellings_of_one_tweet_are_one_text():
    """Votes merge by near-duplicate key, the key of every split and of the gate: a tweet and its repost with
    another t.co link (and other punctuation) are one text. Keyed by folded case and whitespace only, the two
    analysts' agreeing votes below stayed two pending texts, and a reviewer's label of one copy and a team's
    contrary label of the other were both accepted, contradicting each other in the training feedback."""
    a, b, c = "$AAPL up! https://t.co/AbC123", "$aapl up https://t.co/zzz999", "$AAPL UP!! https://t.co/q"
    merged = merge_feedback([_row(1, a, "ana", sentiment="positive"), _row(2, b, "bo", sentiment="positive")], POLICY)
    assert [(m.text, m.sentiment, m.authors) for m in merged.texts] == [(a, "positive", ("ana", "bo"))]
    assert merged.pending == 0
    contrary = merge_feedback([_row(1, a, "rita", sentiment="negative"), _row(2, b, "ana", sentiment="positive"),
                               _row(3, c, "bo", sentiment="positive")], POLICY)
    (text,) = contrary.texts  # one text, one label: the reviewer's
    assert (text.text, text.sentiment, text.reviewed) == (a, "negative", True)
    # ...and one text against the author cap: a reviewer labelling both copies alone has one sole label
    twice = merge_feedback([_row(1, a, "rita", sentiment="negative"), _row(2, b, "rita", sentiment="negative")],
                           POLICY)
    assert len(twice.texts) == 1 and twice.sole_texts == {"rita": 1}
    # texts without any word character keep their own key (they are not all one text)
    assert len(merge_feedback([_row(1, "📈📈", "rita", sentiment="positive"),
                               _row(2, "📉📉", "rita", sentiment="negative")], POLICY).texts) == 2


def test_the_author_cap_counts_per_text_and_task():
    """A reviewer's lone sentiment label is theirs alone even when two other analysts agreed on the same text's
    topic: pooled over tasks, the text had three authors and all 100 of rita's labels escaped the cap."""
    rows = [_row(i, f"headline {i}", "rita", sentiment="negative", minutes=i + 1) for i in range(100)]
    rows += [_row(1000 + 2 * i + k, f"headline {i}", author, topic="Energy | Oil", minutes=1000 + 2 * i + k)
             for i in range(100) for k, author in enumerate(("ana", "bo"))]
    merged = merge_feedback(rows, POLICY)
    rita = [m for m in merged.texts if m.sentiment is not None]
    assert len(rita) <= author_budget(100, POLICY) == 25  # 0.2 / 0.8 x the 100 agreed topic labels
    assert len(rita) == 25 and merged.sole_texts == {"rita": 25} and merged.dropped_votes == {"rita": 75}
    assert {m.text for m in rita} == {f"headline {i}" for i in range(25)}  # the oldest kept, the newest dropped
    assert sum(m.topic == "Energy | Oil" for m in merged.texts) == 100  # the team's labels are untouched


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_500_rows_from_one_author_stay_bounded_in_the_training_set(engine):
    """The documented bound (docs/retraining.md): of one author's rows, none reach the challenger's training
    feedback unless a second author agrees, and a reviewer's lone labels are at most
    max(author_floor, max_author_share x accepted texts).
    Checked on the training-set composition that ``run_retrain`` feeds the trainer (a real fine-tune on 500
    rows is too slow for CI): the challenger can move only as far as those rows can push it."""
    with engine.begin() as conn:
        feedback_sql.insert_many(conn, [{"text": f"Company {i} shares collapse", "sentiment": "positive",
                                         "author": "mallory"} for i in range(500)], origin="api")
        for i in range(30):  # a team of three agreeing on 30 other texts
            for author in ("ana", "bo", "cy"):
                feedback_sql.insert_feedback(conn, article_id=None, text=f"Team headline {i}", topic=None,
                                             sentiment="negative", author=author)
    with engine.connect() as conn:
        rows = feedback_sql.fetch_feedback(conn)
        assert feedback_sql.count_feedback(conn) == 530
    alone = merge_feedback(rows, FeedbackPolicy(max_author_share=0.2, author_floor=5))
    train, holdout = split_feedback(alone.texts, holdout_fraction=0.2, weight=1.0, exclude_texts=set())
    assert not any("collapse" in ex.text for ex in train + holdout)  # nobody agreed: none of the 500 is used
    assert len(train) + len(holdout) == 30

    # Even as a reviewer (whose label alone is accepted) mallory is capped.
    policy = FeedbackPolicy(reviewers=frozenset({"mallory"}), max_author_share=0.2, author_floor=5)
    capped = merge_feedback(rows, policy)
    train, holdout = split_feedback(capped.texts, holdout_fraction=0.2, weight=1.0, exclude_texts=set())
    used = [ex for ex in train + holdout if "collapse" in ex.text]
    total = len(train) + len(holdout)
    assert len(used) == author_budget(30, policy) == 7  # 0.2 / 0.8 x the 30 team texts
    assert len(used) / total <= 0.2 + 1e-9
    assert capped.dropped_votes["mallory"] >= 490


def _merged(text: str, minutes: int, sentiment: str = "negative") -> MergedText:
    return MergedText(key=text.lower(), text=text, sentiment=sentiment, topic=None, authors=("ana", "bo"),
                      reviewed=False, accepted_at=T0 + timedelta(minutes=minutes))


def test_feedback_near_duplicating_a_gate_row_is_never_trained_on() -> None:
    """A tweet re-posted with a new t.co link is the dev row it copies: before, only case and whitespace were
    folded, so the copy trained the challenger and the gate then scored it on that row as unseen."""
    from training.datasets import near_duplicate_key

    dev_row = "$AAPL beats estimates! https://t.co/AbC123"
    merged = [_merged("$AAPL beats estimates https://t.co/zzz999", 1), _merged("Oil slumps", 2)]
    train, holdout = split_feedback(merged, holdout_fraction=0.0, weight=1.0,
                                    exclude_texts={near_duplicate_key(dev_row)})
    assert [ex.text for ex in train] == ["Oil slumps"] and holdout == []


def test_a_text_the_champion_trained_on_is_never_held_out() -> None:
    """A late confirming vote makes an old text the newest by accepted_at: held out, it scored the champion on
    its own training rows and tilted the feedback vote its way."""
    from training.datasets import near_duplicate_key

    merged = [_merged(f"text {i}", i) for i in range(8)] + [_merged("text 0 again", 100), _merged("new text", 99)]
    merged[0] = _merged("text 0", 101)  # confirmed by a third analyst after the champion's retrain
    seen = {near_duplicate_key(f"text {i}") for i in range(8)}
    train, holdout = split_feedback(merged, holdout_fraction=0.2, weight=1.0, exclude_texts=set(),
                                    seen_by_champion=seen)
    assert sorted(ex.text for ex in holdout) == ["new text", "text 0 again"]
    assert "text 0" in {ex.text for ex in train} and len(train) + len(holdout) == len(merged)


def test_feedback_seen_by_the_champion_is_what_its_retrain_cutoff_accepted(engine) -> None:
    from training.retrain import feedback_seen_by

    policy = FeedbackPolicy(max_author_share=1.0)
    with engine.begin() as conn:
        for author in ("ana", "bo"):
            feedback_sql.insert_feedback(conn, article_id=None, text="Old agreed text", topic=None,
                                         sentiment="negative", author=author)
        feedback_sql.insert_feedback(conn, article_id=None, text="Half agreed", topic=None, sentiment="positive",
                                     author="ana")
    with engine.connect() as conn:
        cutoff = feedback_sql.latest_feedback_time(conn)
    with engine.begin() as conn:
        feedback_sql.insert_feedback(conn, article_id=None, text="Half agreed", topic=None, sentiment="positive",
                                     author="bo")  # accepted only after the champion's cutoff
    champion = {"training_config": {"retrain": {"feedback_until": cutoff.isoformat()}}}
    assert feedback_seen_by(engine, champion, policy) == {"old agreed text"}
    assert feedback_seen_by(engine, {"training_config": {}}, policy) == set()  # the bundled model: none
    # a correction of a base train sentence: every champion trained on it, so it is never held out either
    base = [LabeledExample(text="Base train sentence, corrected later", sentiment=0, source="x")]
    assert feedback_seen_by(engine, {"training_config": {}}, policy, base_train=base) == {
        "base train sentence corrected later"}


def test_a_row_committed_after_a_retrain_read_feedback_is_never_seen_by_that_retrain(engine) -> None:
    """A CSV import that begins before a retrain reads feedback and commits after it gets a ``created_at`` (its
    transaction's start) before that retrain's ``feedback_until``: the next retrain must still not count it as seen
    by the champion (it would never be held out, and the champion would be scored as if it had trained on it)."""
    from sqlalchemy import select

    from storage.schema import Feedback
    from training.retrain import feedback_seen_by, read_feedback

    policy = FeedbackPolicy(max_author_share=1.0)
    with engine.connect() as importer:  # the import's transaction: begun, rows inserted, not committed yet
        with importer.begin():
            late = [feedback_sql.insert_feedback(importer, article_id=None, text="Late import", topic=None,
                                                 sentiment="negative", author=author) for author in ("ana", "bo")]
            with engine.begin() as api:  # an API label committed meanwhile: the newest visible time
                for author in ("ana", "bo"):
                    feedback_sql.insert_feedback(api, article_id=None, text="Read in time", topic=None,
                                                 sentiment="positive", author=author)
            rows, record = read_feedback(engine)  # the retrain's read, on its own connection
        # committed here, after the read
    with engine.connect() as conn:
        late_times = conn.execute(select(Feedback.created_at).where(Feedback.id.in_(late))).scalars().all()
    assert all(t <= datetime.fromisoformat(record["feedback_until"]) for t in late_times)  # the race is real
    assert {r.text for r in rows} == {"Read in time"}
    champion = {"training_config": {"retrain": record}}
    assert feedback_seen_by(engine, champion, policy) == {"read in time"}


def test_id_ranges_round_trip() -> None:
    from training.retrain import id_ranges, in_ranges

    ranges = id_ranges([7, 3, 4, 5, 9, 10, 4])
    assert ranges == [[3, 5], [7, 7], [9, 10]]
    assert [i for i in range(0, 13) if in_ranges(ranges, i)] == [3, 4, 5, 7, 9, 10]
    assert id_ranges([]) == [] and not in_ranges([], 1)
