"""Prometheus metrics of the stream worker, on an injectable registry (tests and benchmarks pass their own)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

# Every reason a record is dead-lettered for (mm.dlq.reason), as the code spells it: parse_news's rejections
# (streams/messages.py), the processing and worker failures (streams/processing.py, streams/worker.py) and the
# database sink's refusals (streams/sinks.py). tests/streams/test_worker_metrics.py keeps this list complete.
DEADLETTER_REASONS = (
    "empty", "not_utf8", "invalid_json", "not_an_object", "invalid_fields", "too_deep", "unparseable",
    "undecodable_record", "engine_rejected", "engine_error", "row_error", "internal_error",
    "conflicting_duplicate", "db_rejected",
)
#: the blocking calls whose start time ``marketmood_worker_call_started_timestamp_seconds`` exports
CALL_STAGES = ("classify", "database")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class WorkerMetrics:
    """consumed, batch sizes, inference / DB latency, dead-lettered (by reason), retries, lag, model version."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter("marketmood_worker_consumed", "Records consumed from news.raw.", registry=r)
        self.scored = Counter(
            "marketmood_worker_scored",
            "Articles scored and committed (a re-read record is scored again; its rows are not duplicated).", registry=r,
        )
        self.deadlettered = Counter(
            "marketmood_worker_deadlettered", "Records sent to news.deadletter.", ["reason"], registry=r
        )
        for reason in DEADLETTER_REASONS:  # exported at 0 from the start: increase() misses a series' first sample
            self.deadlettered.labels(reason=reason)
        self.batch_size = Histogram(
            "marketmood_worker_batch_size", "Records per micro-batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "marketmood_worker_inference_seconds", "Classifier time per batch.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.db_seconds = Histogram(
            "marketmood_worker_db_write_seconds", "Successful DB transaction time per batch.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.retries = Counter(
            "marketmood_worker_retries", "Failed attempts that were retried, by stage (database, kafka, classifier, "
            "commit) and kind (transient, systemic, ...).", ["stage", "kind"], registry=r,
        )
        self.duplicates = Counter(
            "marketmood_worker_duplicates", "Identical copies of an id within one batch (scored once).", registry=r
        )
        self.commit_failures = Counter(
            "marketmood_worker_commit_failures", "Offset commits refused after a rebalance (records re-read).", registry=r
        )
        self.deadletter_stubs = Counter(
            "marketmood_worker_deadletter_stubs", "Dead letters too large for the broker, sent as stubs.", registry=r
        )
        self.lag = Gauge("marketmood_worker_lag", "Records between the partition's log end and this worker's last "
                         "committed offset (fetched but uncommitted ones included).", ["partition"], registry=r)
        self.call_started = Gauge(
            "marketmood_worker_call_started_timestamp_seconds",
            "Unix time the current batch's classifier call or database write (its retries included) started, 0 when "
            "none is in progress, by stage. A call that HANGS rather than fails (a wedged model, a frozen PostgreSQL) "
            "raises no error and counts no retry: alert on this > 0 and time() - this > N.", ["stage"], registry=r,
        )
        for stage in CALL_STAGES:
            self.call_started.labels(stage=stage).set(0)
        self.model_info = Gauge(
            "marketmood_worker_model", "1 for the model version that scored the last batch.", ["version"], registry=r
        )

    @contextmanager
    def call_in_flight(self, stage: str) -> Iterator[None]:
        """Export the start time of one blocking call while it runs (see ``call_started``)."""
        gauge = self.call_started.labels(stage=stage)
        gauge.set_to_current_time()
        try:
            yield
        finally:
            gauge.set(0)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics over HTTP in a daemon thread; port 0 disables it."""
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
