"""Which analyst labels a retrain may trust: validation, per-text per-task merge, agreement, author caps.

Why: retraining changes the model without a human in the room, so no single person may steer it.

* A row is validated against the label maps (``models.labels``) before it is stored (``validate_feedback``).
* Labels merge per text and per task: each author's latest label for that task is their vote; a later
  sentiment-only row does not touch the same author's topic vote. Texts are the same when their
  near-duplicate keys are (``text_key``: the key of every split and of the gate), so a tweet re-posted with
  another t.co link gathers its votes in one place, is one text, and counts once against the cap.
* A label is accepted when ``min_agreeing_authors`` (2) distinct authors agree and no other label has as
  many votes, or when a reviewer voted (the latest reviewer's label wins).
* Each author's share of the labels, per (text, task), accepted on their word alone (a reviewer's, since anyone
  else needs a second author) is capped: at most ``max(author_floor, max_author_share * accepted labels)``;
  votes beyond that (newest first) are dropped and the merge is redone until it is stable. Per (text, task):
  two analysts agreeing on a text's topic do not vouch for a reviewer's lone sentiment label of it. So whatever
  one person submits, the training feedback holds at most that many labels that only they vouched for; every
  other label carries the agreement of a second named author.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.labels import HEADS, UnknownLabelError, normalize_sentiment, normalize_topic
from models.text_encoder import has_visible_characters, invalid_unicode
from storage.feedback import FeedbackRow
from training.datasets import near_duplicate_key, normalize_text

TASKS = HEADS  # a correction labels one of the model's heads


def _clean(value: Any) -> str | None:
    """Stripped text, None when blank (zero-width-only included); ValueError for what PostgreSQL text cannot hold
    (NUL, lone surrogates)."""
    if value is None:
        return None
    value = str(value).strip()
    if "\x00" in value:
        raise ValueError(f"contains a NUL character: {value[:40]!r}")
    if (problem := invalid_unicode(value)) is not None:
        raise ValueError(f"{problem}: {value[:40]!r}")
    return value if has_visible_characters(value) else None


def validate_feedback(
    *, article_id: str | None, text: str | None, topic: str | None, sentiment: str | None, author: str | None
) -> dict[str, Any]:
    """Normalize one label row; raise ValueError (with the reason) for anything that must not be stored."""
    article_id, text, author_clean = _clean(article_id), _clean(text), _clean(author)
    topic_raw, sentiment_raw = _clean(topic), _clean(sentiment)
    if article_id is None and text is None:
        raise ValueError("feedback needs an article_id or a text")
    if topic_raw is None and sentiment_raw is None:
        raise ValueError("feedback needs a topic and/or a sentiment label")
    if author_clean is None:
        raise ValueError("feedback needs an author")
    try:
        topic_norm = normalize_topic(topic_raw) if topic_raw is not None else None
        sentiment_norm = normalize_sentiment(sentiment_raw) if sentiment_raw is not None else None
    except UnknownLabelError as exc:
        raise ValueError(str(exc)) from None
    return {"article_id": article_id, "text": text, "topic": topic_norm, "sentiment": sentiment_norm,
            "author": author_clean}


@dataclass(frozen=True)
class FeedbackPolicy:
    reviewers: frozenset[str] = frozenset()
    min_agreeing_authors: int = 2
    max_author_share: float = 0.2
    author_floor: int = 20  # small teams: an author may always support this many texts


@dataclass(frozen=True)
class MergedText:
    """One text with its accepted labels (None for a task without an accepted label)."""

    key: str
    text: str
    sentiment: str | None
    topic: str | None
    authors: tuple[str, ...]  # everyone whose vote supports an accepted label
    reviewed: bool
    accepted_at: datetime  # when the last supporting vote arrived (orders the time-forward split)


@dataclass(frozen=True)
class MergeResult:
    texts: list[MergedText]
    pending: int  # (text, task) pairs with votes but no accepted label yet
    conflicts: int  # (text, task) pairs where authors disagree and no label leads
    dropped_votes: dict[str, int] = field(default_factory=dict)  # author -> votes dropped by the cap
    author_texts: dict[str, int] = field(default_factory=dict)  # author -> accepted texts they support
    # author -> accepted (text, task) labels on their word alone (one per text when feedback labels one task)
    sole_texts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"texts": len(self.texts), "pending": self.pending, "conflicts": self.conflicts,
                "dropped_votes": dict(self.dropped_votes), "author_texts": dict(self.author_texts),
                "sole_texts": dict(self.sole_texts)}


@dataclass(frozen=True)
class _Vote:
    author: str
    label: str
    at: datetime
    row_id: int


def text_key(text: str) -> str:
    """The key votes merge by: the text's near-duplicate key (``datasets.near_duplicate_key``: URLs, entities,
    punctuation, case and whitespace folded), the key every split, the feedback hold-out and the gate use, so
    two copies of a tweet that differ only by their t.co link are one text with one label. A text with no word
    character at all (its near-duplicate key is empty) keeps its case/whitespace-folded form, so such texts
    are not all merged into one."""
    return near_duplicate_key(text) or normalize_text(text)


def _votes(rows: Iterable[FeedbackRow]) -> tuple[dict[tuple[str, str], dict[str, _Vote]], dict[str, str]]:
    """{(text key, task): {author: latest vote}} and {text key: a representative text (the first labelled)}."""
    votes: dict[tuple[str, str], dict[str, _Vote]] = defaultdict(dict)
    texts: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: (r.created_at, r.id)):
        key = text_key(row.text)
        texts.setdefault(key, row.text)
        for task in TASKS:
            label = getattr(row, task)
            if label is not None:
                votes[(key, task)][row.author] = _Vote(row.author, label, row.created_at, row.id)
    return votes, texts


def _decide(task_votes: dict[str, _Vote], policy: FeedbackPolicy) -> tuple[str, list[_Vote], bool] | str:
    """(label, supporting votes, reviewed) or "pending" / "conflict"."""
    reviewer_votes = [v for a, v in task_votes.items() if a in policy.reviewers]
    if reviewer_votes:
        label = max(reviewer_votes, key=lambda v: (v.at, v.row_id)).label
        return label, [v for v in task_votes.values() if v.label == label], True
    counts = Counter(v.label for v in task_votes.values()).most_common()
    if not counts:
        return "pending"
    top, n_top = counts[0]
    if len(counts) > 1 and counts[1][1] == n_top:
        return "conflict"
    if n_top < policy.min_agreeing_authors:
        return "pending" if len(counts) == 1 else "conflict"
    return top, [v for v in task_votes.values() if v.label == top], False


# An accepted label resting on one author's vote alone: (when its vote arrived, text key, task).
_SoleLabel = tuple[datetime, str, str]


def _accept(
    votes: dict[tuple[str, str], dict[str, _Vote]], texts: dict[str, str], policy: FeedbackPolicy
) -> tuple[list[MergedText], int, int, dict[str, list[tuple[datetime, str]]], dict[str, list[_SoleLabel]], int]:
    """Accepted texts, pending, conflicts, {author: texts they support}, {author: labels on their word alone}
    and the number of accepted (text, task) labels."""
    accepted: dict[str, dict[str, Any]] = {}
    sole: dict[str, list[_SoleLabel]] = defaultdict(list)
    pending = conflicts = labels = 0
    for (key, task), task_votes in votes.items():
        decision = _decide(task_votes, policy)
        if decision == "pending":
            pending += 1
            continue
        if decision == "conflict":
            conflicts += 1
            continue
        label, support, reviewed = decision  # type: ignore[misc]
        labels += 1
        entry = accepted.setdefault(key, {"authors": set(), "reviewed": False, "at": None})
        entry[task] = label
        entry["authors"] |= {v.author for v in support}
        entry["reviewed"] |= reviewed
        last = max(v.at for v in support)
        entry["at"] = last if entry["at"] is None else max(entry["at"], last)
        if len({v.author for v in support}) == 1:  # per (text, task): another task's authors do not vouch for it
            sole[support[0].author].append((last, key, task))
    merged = [MergedText(key, texts[key], e.get("sentiment"), e.get("topic"), tuple(sorted(e["authors"])),
                         e["reviewed"], e["at"]) for key, e in accepted.items()]
    merged.sort(key=lambda m: (m.accepted_at, m.key))
    by_author: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for m in merged:
        for author in m.authors:
            by_author[author].append((m.accepted_at, m.key))
    return merged, pending, conflicts, by_author, sole, labels


def author_budget(other_texts: int, policy: FeedbackPolicy) -> int:
    """The most labels (per text and task) one author may have accepted on their word alone, given ``other_texts``
    accepted labels that are not theirs alone: x <= share * (x + others), i.e. x <= share / (1 - share) * others.
    With one task labelled per text, labels are texts."""
    share = policy.max_author_share
    if share >= 1:
        return 1 << 62
    return max(policy.author_floor, math.floor(share / (1 - share) * other_texts))


def merge_feedback(rows: Sequence[FeedbackRow], policy: FeedbackPolicy) -> MergeResult:
    """Accepted labels per text after agreement and the per-author cap (see the module docstring)."""
    votes, texts = _votes(rows)
    dropped: Counter[str] = Counter()
    for _ in range(50):  # each pass only removes votes, so this settles quickly
        merged, pending, conflicts, by_author, sole, labels = _accept(votes, texts, policy)
        over = {a: keys for a, keys in sole.items() if len(keys) > author_budget(labels - len(keys), policy)}
        if not over:
            break
        for author, keys in over.items():
            budget = author_budget(labels - len(keys), policy)
            for _, key, task in sorted(keys)[budget:]:  # keep the oldest ``budget`` labels, drop the newest votes
                if votes.get((key, task), {}).pop(author, None) is not None:
                    dropped[author] += 1
    return MergeResult(merged, pending, conflicts, dict(dropped), {a: len(k) for a, k in by_author.items()},
                       {a: len(k) for a, k in sole.items()})
