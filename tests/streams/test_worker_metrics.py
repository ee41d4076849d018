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
