"""``streams.publisher`` against a broker that goes away mid-replay (a real embedded tansu of the test's own)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from marketmood.settings import TopicSettings
from streams.broker import EmbeddedBroker
from streams.publisher import Delivery, PublishError, close_producer, make_producer, publish
from streams.sources import Record
from streams.topics import ensure_topics


def _broker_with_topic(home: Path) -> tuple[EmbeddedBroker, str, str]:
    broker = EmbeddedBroker(home)
    bootstrap = broker.start()
    topics = TopicSettings(raw="pub.raw", scored="pub.scored", deadletter="pub.dl", partitions=1)
    ensure_topics(bootstrap, topics)
    return broker, bootstrap, topics.raw


def test_a_broker_gone_mid_replay_stops_the_replay_and_counts_acknowledgements_only(tmp_path: Path) -> None:
    """Before, the loop went on handing records to a producer whose broker was gone until the file ended (at
    the default 50 msg/s the Reuters stream is 75 minutes of progress bar into the void), and only then said
    so. Now the first failed delivery stops it; ``Delivery`` says what the broker acknowledged."""
    broker, bootstrap, topic = _broker_with_topic(tmp_path)
    producer = make_producer(bootstrap, retries=0, request_timeout_ms=1000, delivery_timeout_ms=3000)
    pulled = 0

    def records() -> Iterator[Record]:
        nonlocal pulled
        for i in range(3):
            pulled += 1
            yield {"id": f"a{i}", "title": "taken"}
        producer.flush(10)  # these three are acknowledged
        broker.stop()
        for i in range(3, 1000):  # 20 s of a slow replay after the broker went away
            pulled += 1
            yield {"id": f"a{i}", "title": "never taken"}
            time.sleep(0.02)

    delivery = Delivery()
    try:
        with pytest.raises(PublishError) as info:
            publish(records(), producer=producer, topic=topic, delivery=delivery)
        assert pulled < 500, f"kept sending {pulled} records after the broker was gone"
        assert info.value.published == 3 and delivery.acknowledged == 3
        assert info.value.failed == delivery.sent - 3 > 0
    finally:
        close_producer(producer, 1)
        broker.stop()


def test_closing_a_producer_whose_broker_is_gone_does_not_raise(tmp_path: Path) -> None:
    """kafka-python 3's close() flushes and raises KafkaTimeoutError for records still pending: in
    ``marketmood publish`` that close ran in a ``finally`` and turned the clear error into a traceback."""
    broker, bootstrap, topic = _broker_with_topic(tmp_path)
    producer: KafkaProducer = make_producer(bootstrap)  # default 120-s delivery timeout: records stay pending
    delivery = Delivery()
    try:
        producer.send(topic, value=b'{"id": "a", "title": "t"}').add_callback(delivery._acked)
        producer.flush(10)
        broker.stop()
        producer.send(topic, value=b'{"id": "b", "title": "t"}').add_callback(delivery._acked) \
            .add_errback(delivery.errors.append)
        started = time.monotonic()
        close_producer(producer, 1)  # before: producer.close(1) raised KafkaTimeoutError
        assert time.monotonic() - started < 10
        assert delivery.acknowledged == 1 and len(delivery.errors) == 1  # abandoned: counted as not acknowledged
    finally:
        broker.stop()
