"""Worker metrics: the lag gauge shows only the partitions this worker owns now (labels of partitions lost in a
rebalance are removed, not left frozen at their last value)."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from models.prediction import StaticProvider
from storage.articles import write_scored_batch
from streams.metrics import WorkerMetrics
from streams.sinks import DatabaseSink
from streams.worker import PipelineWorker, WorkerConfig


class OwnsPartitions:
    """The two consumer calls the lag gauge makes, over a fixed assignment and high watermarks."""

    def __init__(self, owned: dict[int, int]) -> None:
        self.owned = owned

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("news.raw", p) for p in self.owned}

    def highwater(self, tp: TopicPartition) -> int:
        return self.owned[tp.partition]


def _lag_labels(metrics: WorkerMetrics) -> dict[str, float]:
    return {s.labels["partition"]: s.value for m in metrics.registry.collect() if m.name == "marketmood_worker_lag"
            for s in m.samples}


def test_lag_labels_of_partitions_lost_in_a_rebalance_are_removed() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    sink = DatabaseSink(None, write_scored_batch)  # type: ignore[arg-type] - no write happens here
    worker = PipelineWorker(WorkerConfig(), bootstrap="127.0.0.1:9", db_sink=sink, provider=StaticProvider(None),
                            story_key=str, metrics=metrics)
    worker._positions = {0: 90, 1: 40, 2: 7}
    worker.consumer = OwnsPartitions({0: 100, 1: 50, 2: 10})  # type: ignore[assignment]
    worker.update_lag()
    assert _lag_labels(metrics) == {"0": 10.0, "1": 10.0, "2": 3.0}
    worker.consumer = OwnsPartitions({1: 55})  # type: ignore[assignment] - partitions 0 and 2 moved away
    worker.update_lag()
    assert _lag_labels(metrics) == {"1": 15.0}
    sink.close()


def _reasons_in_code() -> set[str]:
    """Every literal reason the stream code dead-letters with: ``Rejection("r", ...)`` (parse_news),
    ``DeadLetter(record, "r", ...)`` and the database sink's ``refused.append((item, "r", ...))``."""
    import ast
    from pathlib import Path

    import streams

    found: set[str] = set()
    for path in Path(streams.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            arg: ast.expr | None = None
            if name == "Rejection" and node.args:
                arg = node.args[0]
            elif name == "DeadLetter" and len(node.args) > 1:
                arg = node.args[1]
            elif (name == "append" and getattr(node.func.value, "attr", None) == "refused"  # type: ignore[attr-defined]
                  and node.args and isinstance(node.args[0], ast.Tuple) and len(node.args[0].elts) > 1):
                arg = node.args[0].elts[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
    return found


def test_every_deadletter_reason_is_exported_at_zero_from_the_start() -> None:
    """increase() over a range needs a sample before the first dead letter of a (replica, reason) series: a
    series born at 1 counted 0 in "Dead-lettered (range)". Every reason is exported at 0 by a fresh worker."""
    from prometheus_client import generate_latest

    exported = generate_latest(WorkerMetrics(CollectorRegistry()).registry).decode()
    reasons = _reasons_in_code()
    assert {"invalid_json", "engine_rejected", "conflicting_duplicate", "internal_error"} <= reasons  # the scan works
    missing = [r for r in sorted(reasons) if f'marketmood_worker_deadlettered_total{{reason="{r}"}} 0.0' not in exported]
    assert missing == []


def test_the_reason_list_is_the_reasons_the_code_dead_letters_with() -> None:
    from streams.metrics import DEADLETTER_REASONS

    assert sorted(DEADLETTER_REASONS) == sorted(_reasons_in_code())


class LosesPartitionsWhileAwaited:
    """aiokafka's consumer as ``_idle_progress`` sees it in a rebalance: ``highwater`` / ``last_poll_timestamp``
    assert that the partition is still assigned (as aiokafka does), and while ``position()`` is awaited the
    group's new assignment lands, taking every other partition away."""

    def __init__(self, owned: set[int]) -> None:
        self.owned = set(owned)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("news.raw", p) for p in self.owned}

    def _assert_owned(self, tp: TopicPartition) -> None:
        assert tp.partition in self.owned, "Partition is not assigned"

    def highwater(self, tp: TopicPartition) -> int:
        self._assert_owned(tp)
        return 5

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        self._assert_owned(tp)
        return 2_000

    async def position(self, tp: TopicPartition) -> int:
        import asyncio

        await asyncio.sleep(0)
        self.owned = {tp.partition}  # the rebalance completed meanwhile
        return 5


def test_a_rebalance_during_the_idle_progress_check_does_not_crash_the_worker() -> None:
    """Before, the idle check looked up the next partition's last poll time after awaiting the previous one's
    position: a partition taken away meanwhile made aiokafka raise AssertionError out of the worker's main loop."""
    import asyncio

    sink = DatabaseSink(None, write_scored_batch)  # type: ignore[arg-type] - its one-attempt write fails, as allowed
    worker = PipelineWorker(WorkerConfig(), bootstrap="127.0.0.1:9", db_sink=sink, provider=StaticProvider(None),
                            story_key=str, metrics=WorkerMetrics(CollectorRegistry()))
    worker.consumer = LosesPartitionsWhileAwaited({0, 1})  # type: ignore[assignment]
    worker._polls_seen = {0: 1_000, 1: 1_000}  # both polled since the previous check; no position known yet
    worker._last_idle_progress = 0.0
    asyncio.run(worker._idle_progress())
    sink.close()


class HangsUntilReleased:
    """A classifier whose calls block until the test releases them: a wedged model, from the worker's side."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.calls = 0

    def classify(self, texts):  # type: ignore[no-untyped-def]
        from models.prediction import Prediction

        self.calls += 1
        assert self.release.wait(30), "the test never released the classifier"
        return [Prediction("Markets", 1.0, "neutral", 0.0, 1.0, 0.0, "hang-test") for _ in texts]


def _call_started(metrics: WorkerMetrics) -> dict[str, float]:
    return {s.labels["stage"]: s.value for m in metrics.registry.collect()
            if m.name == "marketmood_worker_call_started_timestamp_seconds" for s in m.samples}


def test_a_hanging_classifier_call_is_visible_as_its_start_time_and_cleared_when_it_returns() -> None:
    """A call that hangs raises nothing and counts no retry: only its start time tells on-call the worker is
    stuck. Exported at 0 from the start, set while the call runs, 0 again once it returns."""
    import asyncio
    import json
    import time

    from streams.processing import RawRecord
    from tests.streams.harness import article

    metrics = WorkerMetrics(CollectorRegistry())
    assert _call_started(metrics) == {"classify": 0.0, "database": 0.0}
    classifier = HangsUntilReleased()
    sink = DatabaseSink(None, write_scored_batch)  # type: ignore[arg-type] - no write happens here
    worker = PipelineWorker(WorkerConfig(), bootstrap="127.0.0.1:9", db_sink=sink, provider=StaticProvider(classifier),
                            story_key=str, metrics=metrics)
    record = RawRecord("news.raw", 0, 0, b"a-1", json.dumps(article(1)).encode())

    async def scenario() -> None:
        before = time.time()
        task = asyncio.create_task(worker._prepare([record]))
        for _ in range(200):
            if classifier.calls:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        started = _call_started(metrics)
        assert before - 1 <= started["classify"] <= time.time(), started
        assert started["database"] == 0.0
        classifier.release.set()
        batch = await task
        assert len(batch.rows) == 1 and not batch.dead, batch.dead
        assert _call_started(metrics)["classify"] == 0.0

    asyncio.run(scenario())
    worker._infer_pool.close(1.0)
    sink.close()
