"""Wiring of the stream worker: settings -> WorkerConfig, the sinks, the novelty rule, signals, metrics.

``streams.worker`` knows nothing of settings or of where its outputs go; this module builds its pieces:
the database sink (an engine with the worker's statement/lock timeouts and keepalives, writing with
``storage.articles.write_scored_batch``), the story-key (novelty) rule of ``streams.novelty`` used at ingest, and
the Prometheus endpoint. ``run_worker`` runs it until SIGTERM/SIGINT; a second signal exits at once
(un-committed batches are re-read by whoever owns the partitions next).
"""

from __future__ import annotations

import asyncio
import os
import signal

import structlog

from marketmood.settings import Settings
from models.prediction import ClassifierProvider
from storage.articles import write_scored_batch
from storage.db import make_engine
from streams.metrics import WorkerMetrics
from streams.novelty import story_key
from streams.sinks import DatabaseSink
from streams.worker import PipelineWorker, WorkerConfig

log = structlog.get_logger(__name__)


def worker_config(settings: Settings) -> WorkerConfig:
    w, t = settings.worker, settings.topics
    return WorkerConfig(
        raw_topic=t.raw,
        scored_topic=t.scored,
        deadletter_topic=t.deadletter,
        group_id=w.app_id,
        batch_size=w.batch_size,
        batch_max_wait_s=w.batch_max_wait_s,
        session_timeout_s=w.session_timeout_s,
        heartbeat_interval_s=w.heartbeat_interval_s,
        retry_max_s=w.db_retry_max_s,
        drain_timeout_s=w.drain_timeout_s,
        max_request_bytes=w.max_request_bytes,
        publish_scored=w.publish_scored,
    )


def database_sink(settings: Settings, database_url: str) -> DatabaseSink:
    """The worker's database sink: bounded statements and lock waits, keepalives, one small pool."""
    w = settings.worker
    engine = make_engine(database_url, statement_timeout_ms=int(w.statement_timeout_s * 1000),
                         lock_timeout_ms=int(w.lock_timeout_s * 1000), pool_size=2, max_overflow=0)
    return DatabaseSink(engine, write_scored_batch, max_retry_delay_s=w.db_retry_max_s)


def build_worker(settings: Settings, *, bootstrap: str, database_url: str, provider: ClassifierProvider,
                 metrics: WorkerMetrics | None = None) -> PipelineWorker:
    return PipelineWorker(worker_config(settings), bootstrap=bootstrap, db_sink=database_sink(settings, database_url),
                          provider=provider, story_key=story_key, metrics=metrics)


def run_worker(settings: Settings, *, bootstrap: str, database_url: str, provider: ClassifierProvider,
               metrics: WorkerMetrics | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT (blocking)."""
    metrics = metrics or WorkerMetrics()
    metrics.serve(settings.worker.web_port)
    worker = build_worker(settings, bootstrap=bootstrap, database_url=database_url, provider=provider,
                          metrics=metrics)
    log.info("worker starting", topic=settings.topics.raw, group=settings.worker.app_id,
             batch_size=settings.worker.batch_size, metrics_port=settings.worker.web_port,
             model_alias=settings.model.alias if settings.model.path is None else None,
             pinned_model=str(settings.model.path) if settings.model.path else None)
    asyncio.run(_serve(worker))
    worker.db_sink.engine.dispose()
    log.info("worker stopped")


async def _serve(worker: PipelineWorker) -> None:
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting without drain", signal=signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("stopping: draining batches in flight", signal=signal.Signals(signum).name)
        worker.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await worker.run()
