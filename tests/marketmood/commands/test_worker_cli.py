"""``marketmood worker`` against a Kafka it cannot reach: one line and exit 1, like an unreachable database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MARKETMOOD = str(Path(sys.executable).with_name("marketmood"))


def test_an_unreachable_kafka_is_one_line_not_a_traceback(tmp_path: Path, pg_url: str, model_path: Path) -> None:
    """ensure_topics gives up after 30 s with kafka-python's KafkaTimeoutError: it reached the user as a
    40-line traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env.update(MARKETMOOD_DATABASE_URL=pg_url, MARKETMOOD_KAFKA_BOOTSTRAP="127.0.0.1:1",
               MARKETMOOD_MODEL__PATH=str(model_path))
    result = subprocess.run([MARKETMOOD, "worker", "--metrics-port", "0"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and "Kafka at 127.0.0.1:1" in errors[0] and "KafkaTimeoutError" in errors[0], (
        result.stderr)
