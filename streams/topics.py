"""Create the pipeline's topics (news.raw, news.scored, news.deadletter) through the admin API.

Topics are never auto-created by the worker, so every entry point calls ``ensure_topics`` first. Creating a
topic that exists is not an error: the call is idempotent (partition counts of existing topics are kept).
"""

from __future__ import annotations

import time
from typing import Protocol

import structlog
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = structlog.get_logger(__name__)


class TopicSettings(Protocol):
    """The topic layout (names and sizes); ``marketmood.settings.TopicSettings`` satisfies it."""

    raw: str
    scored: str
    deadletter: str
    partitions: int
    replication_factor: int


def topic_specs(topics: TopicSettings) -> list[NewTopic]:
    """news.raw gets ``partitions`` (the unit of worker parallelism); the output topics get the same."""
    return [
        NewTopic(name=name, num_partitions=topics.partitions, replication_factor=topics.replication_factor)
        for name in (topics.raw, topics.scored, topics.deadletter)
    ]


def ensure_topics(bootstrap: str, topics: TopicSettings, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; returns the names that were created by this call."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="marketmood-admin",
                                     request_timeout_ms=10_000)
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in topic_specs(topics) if spec.name not in existing]
        created: list[str] = []
        for spec in missing:
            try:
                admin.create_topics([spec])
                created.append(spec.name)
            except TopicAlreadyExistsError:  # created concurrently by another process
                pass
        if created:
            log.info("topics created", topics=created, partitions=topics.partitions)
        return created
    finally:
        admin.close()
