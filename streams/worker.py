"""The faust-streaming worker: news.raw -> micro-batch -> classifier -> ONE DB transaction -> acks -> news.scored.

Commit boundary (why nothing is ever skipped):
- The agent reads with ``stream.noack_take``: unlike ``take()``, it never acknowledges on its own, so an
  exception or a cancellation inside the batch body leaves every offset of the batch un-acked.
- A batch is acknowledged (``stream.ack``) only after (1) its rows are committed in one transaction and
  (2) its news.scored and news.deadletter records are confirmed by the broker. faust commits only the
  contiguous acked prefix of each partition, so an un-acked batch is re-read after a crash or restart.
- A transient DB error (server down, connection lost) is retried with exponential back-off, forever,
  inside the batch: the worker stalls (lag grows, visible in metrics) instead of skipping. A data error
  (a row PostgreSQL refuses) is isolated by writing the batch row by row; refused rows are dead-lettered.
- Rows are upserted idempotently on (article id, model version), so replays after a crash or a rebalance
  add no duplicate rows; news.scored is therefore at-least-once.
- On SIGTERM faust stops fetching and waits until every record already handed to the stream is acked
  (``stream_wait_empty``), committing as it goes: the batch in flight and the few buffered records are
  finished and committed before exit. While the database is down that wait lasts until it is back; a
  SIGKILL then is safe (the un-acked batch is re-read). Should faust cancel the agent anyway, prepared
  batches are still given ``drain_timeout_s`` to commit.
- Two stages overlap (classify batch N+1 while batch N is written and published), with at most one
  prepared batch waiting: throughput is that of the slower stage, not of their sum.
"""

from __future__ import annotations

import structlog
import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import faust
from sqlalchemy import Engine

from marketmood.settings import Settings
from models.prediction import ClassifierProvider
from storage.articles import ScoredArticle
from streams.metrics import WorkerMetrics
from streams.processing import (
    DeadLetter,
    RawRecord,
    Scored,
    classify_accepted,
    db_item,
    deadletter_record,
    scored_event,
    validate_batch,
)

log = structlog.get_logger(__name__)


@dataclass
class PreparedBatch:
    """A classified batch waiting for its DB commit; its events are not acked yet."""

    events: list[faust.EventT]
    records: list[RawRecord]
    scored: list[Scored]
    dead: list[DeadLetter]
    duplicates: int
    infer_s: float

BatchWriter = Callable[[Engine, list[ScoredArticle]], Any]


def default_story_key() -> Callable[[str], str]:
    from alerts.syndication import story_key

    return story_key


def default_batch_writer(engine: Engine, items: list[ScoredArticle]) -> Any:
    """One transaction: multi-row idempotent upsert of articles + scores (storage owns the SQL)."""
    from storage.articles import upsert_scored_batch
    from storage.db import transaction

    with transaction(engine) as conn:
        return upsert_scored_batch(conn, items)


def faust_app(settings: Settings, bootstrap: str, *, app_id: str | None = None) -> faust.App:
    """A faust App tuned for tansu and at-least-once processing (see FACTS.md)."""
    w = settings.worker
    return faust.App(
        app_id or w.app_id,
        broker=f"kafka://{bootstrap}",
        autodiscover=False,
        web_enabled=False,  # our Prometheus endpoint is separate; faust's web would clash on 6066
        processing_guarantee="at_least_once",  # exactly_once needs aiokafka transactions tansu lacks
        broker_session_timeout=w.session_timeout_s,
        broker_heartbeat_interval=w.heartbeat_interval_s,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are created by streams.topics with the right partitions
        # No faust tables here, so no changelog recovery and no need for tansu's producer_max_batch_size=1
        # workaround (FACTS.md); batching the news.scored records per request is what lets the commit stage
        # keep up with the model (measured: benchmarks/bench_pipeline.py).
        producer_linger=0.005,
        # few records buffered beyond the batch: bounded drain time on SIGTERM (faust waits for all of them)
        stream_buffer_maxsize=max(4 * w.batch_size, 64),
        datadir=str(settings.home / "faust"),
        store="memory://",
    )


class PipelineWorker:
    """Owns the faust app, the agent and the batch pipeline; see the module docstring for the guarantees."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        db_engine: Engine,
        provider: ClassifierProvider,
        metrics: WorkerMetrics | None = None,
        batch_writer: BatchWriter = default_batch_writer,
        story_key: Callable[[str], str] | None = None,
        drain_timeout_s: float = 30.0,
        app_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.db_engine = db_engine
        self.provider = provider
        self.metrics = metrics or WorkerMetrics()
        self.batch_writer = batch_writer
        self.story_key = story_key or default_story_key()
        self.drain_timeout_s = drain_timeout_s
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="mm-classify")
        self._db_pool = ThreadPoolExecutor(1, thread_name_prefix="mm-db")
        self._next_offset: dict[tuple[str, int], int] = {}
        self.app = faust_app(settings, bootstrap, app_id=app_id)
        self._install()

    # ---- faust wiring -------------------------------------------------------------------------------
    def _install(self) -> None:
        app, w = self.app, self.settings.worker
        source = app.topic(
            self.topics.raw, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

        async def score_news(stream: faust.StreamT) -> None:
            # Two stages overlap: while the committer writes batch N, batch N+1 is classified. The queue
            # holds at most one prepared batch, so a stalled database stops consumption (back-pressure).
            queue: asyncio.Queue[PreparedBatch] = asyncio.Queue(maxsize=1)
            committer = asyncio.ensure_future(self._committer(stream, queue))
            try:
                async for events in stream.noack_take(w.batch_size, within=w.batch_max_wait_s):
                    prepared = await self.prepare_batch(events)
                    while True:  # put, unless the committer died (then surface its error, never skip)
                        put = asyncio.ensure_future(queue.put(prepared))
                        await asyncio.wait({put, committer}, return_when=asyncio.FIRST_COMPLETED)
                        if put.done():
                            break
                        put.cancel()
                        committer.result()  # raises the committer's exception
            finally:
                await self._drain(queue, committer)

        app.agent(source, name="marketmood.score_news", concurrency=1)(score_news)
        app.timer(interval=2.0)(self._update_lag)

    async def _drain(self, queue: asyncio.Queue[PreparedBatch], committer: asyncio.Future[None]) -> None:
        """On agent stop: let prepared batches commit (bounded); what is left stays un-acked and is re-read."""
        if not committer.done():
            try:
                await asyncio.wait_for(asyncio.shield(queue.join()), self.drain_timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                log.warning("prepared batches not committed before stop; they will be re-read")
            committer.cancel()

    async def _committer(self, stream: faust.StreamT, queue: asyncio.Queue[PreparedBatch]) -> None:
        while True:
            prepared = await queue.get()
            try:
                await self.commit_batch(stream, prepared)
            finally:
                queue.task_done()

    # ---- one batch ----------------------------------------------------------------------------------
    async def handle_batch(self, stream: faust.StreamT, events: Sequence[faust.EventT]) -> None:
        """Both stages for one batch, sequentially (used by tests and tools)."""
        await self.commit_batch(stream, await self.prepare_batch(events))

    async def prepare_batch(self, events: Sequence[faust.EventT]) -> PreparedBatch:
        """Stage 1: validate and classify (in the executor). Nothing is acked here."""
        loop = asyncio.get_running_loop()
        records = [_to_record(ev) for ev in events]
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        plan = validate_batch(records)
        dead: list[DeadLetter] = list(plan.dead)
        scored: list[Scored] = []
        infer_s = 0.0
        if plan.accepted:
            classifier = self.provider.current()  # once per batch: hot reloads switch between batches
            started = time.perf_counter()
            scored, refused = await loop.run_in_executor(self._infer_pool, classify_accepted, classifier, plan.accepted)
            infer_s = time.perf_counter() - started
            self.metrics.inference_seconds.observe(infer_s)
            dead += refused
            if scored:
                self.metrics.model_info.clear()
                self.metrics.model_info.labels(version=scored[0].prediction.model_version).set(1)
        return PreparedBatch(list(events), records, scored, dead, plan.duplicates, infer_s)

    async def commit_batch(self, stream: faust.StreamT, batch: PreparedBatch) -> None:
        """Stage 2: one DB transaction (retried), publish results, and only then ack the offsets."""
        scored, dead = batch.scored, list(batch.dead)
        t1 = time.perf_counter()
        if scored:
            rejected = await self._write_with_retry(scored)
            if rejected:
                refused_ids = {id(s) for s, _ in rejected}
                dead += [DeadLetter(s.accepted.record, "db_rejected", why) for s, why in rejected]
                scored = [s for s in scored if id(s) not in refused_ids]
        t2 = time.perf_counter()
        await self._publish_with_retry(scored, dead)
        t3 = time.perf_counter()
        for event in batch.events:
            await stream.ack(event)
        for rec in batch.records:
            key = (rec.topic, rec.partition)
            self._next_offset[key] = max(self._next_offset.get(key, 0), rec.offset + 1)
        self.metrics.scored.inc(len(scored))
        for d in dead:
            self.metrics.deadlettered.labels(reason=d.reason).inc()
        log.debug("batch committed", size=len(batch.records), scored=len(scored), dead=len(dead),
                  duplicates=batch.duplicates, infer_s=round(batch.infer_s, 4), db_s=round(t2 - t1, 4),
                  publish_s=round(t3 - t2, 4))

    async def _write_with_retry(self, scored: list[Scored]) -> list[tuple[Scored, str]]:
        """Commit the batch; retry transient errors forever with capped exponential back-off.

        Returns the rows PostgreSQL refused for data reasons (isolated row by row), to be dead-lettered.
        """
        items = [db_item(s, self.story_key) for s in scored]
        refusal, seconds = await self._write_until_not_transient(items)
        if refusal is None:
            self.metrics.db_seconds.observe(seconds)
            return []
        log.warning("batch refused by the database; isolating rows", error=str(refusal).splitlines()[0])
        refused: list[tuple[Scored, str]] = []
        for s, item in zip(scored, items, strict=True):
            row_refusal, _ = await self._write_until_not_transient([item])
            if row_refusal is not None:
                refused.append((s, str(row_refusal).splitlines()[0][:500]))
        return refused

    async def _write_until_not_transient(self, items: list[ScoredArticle]) -> tuple[Exception | None, float]:
        """Write ``items`` in one transaction, retrying transient errors (server down, connection lost) forever.

        Returns (None, seconds of the successful attempt), or (the error, 0.0) when PostgreSQL refuses the
        data itself: retrying that would block the partition for good.
        """
        from storage.db import is_transient_error

        loop = asyncio.get_running_loop()
        delay, attempt = 0.2, 0
        while True:
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._db_pool, self.batch_writer, self.db_engine, items)
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not is_transient_error(exc):
                    return exc, 0.0
                attempt += 1
                self.metrics.db_retries.inc()
                log.warning("database unavailable; retrying", attempt=attempt, rows=len(items),
                            retry_in_s=round(delay, 2), error=str(exc).splitlines()[0])
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.worker.db_retry_max_s)
                continue
            if attempt:
                log.info("database write succeeded after retries", attempts=attempt + 1)
            return None, time.perf_counter() - started

    async def _publish_with_retry(self, scored: list[Scored], dead: list[DeadLetter]) -> None:
        """Send news.scored and news.deadletter records and wait for the broker to confirm all of them."""
        producer = self.app.producer
        now = datetime.now(timezone.utc)
        delay = 0.2
        while True:
            try:
                futures = []
                for s in scored:
                    key, value = scored_event(s, now)
                    futures.append(await producer.send(self.topics.scored, key, value, None, None, None))
                for d in dead:
                    key, value, headers = deadletter_record(d, now)
                    futures.append(await producer.send(self.topics.deadletter, key, value, None, None, headers))
                if futures:
                    await asyncio.gather(*futures)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker trouble: the batch stays un-acked until sent
                log.warning("publishing results failed; retrying", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _update_lag(self) -> None:
        consumer = self.app.consumer
        try:
            assignment = consumer.assignment()
        except Exception:  # noqa: BLE001 - not yet assigned
            return
        for tp in assignment:
            if tp.topic != self.topics.raw:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = self._next_offset.get((tp.topic, tp.partition), 0)
            self.metrics.lag.labels(partition=str(tp.partition)).set(max(0, highwater - position))

    def close(self) -> None:
        self._infer_pool.shutdown(wait=False, cancel_futures=True)
        self._db_pool.shutdown(wait=False, cancel_futures=True)


def _to_record(event: faust.EventT) -> RawRecord:
    msg = event.message
    headers = msg.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return RawRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        headers=[(str(k), bytes(v) if v is not None else b"") for k, v in headers],
        timestamp_ms=int(msg.timestamp * 1000) if msg.timestamp else None,
    )


def run_worker(
    settings: Settings,
    *,
    bootstrap: str,
    database_url: str,
    provider: ClassifierProvider,
    metrics: WorkerMetrics | None = None,
) -> None:
    """Run the worker until SIGTERM/SIGINT (blocking; faust owns the event loop and signal handlers)."""
    from storage.db import make_engine

    metrics = metrics or WorkerMetrics()
    metrics.serve(settings.worker.web_port)
    engine = make_engine(database_url)
    worker = PipelineWorker(settings, bootstrap=bootstrap, db_engine=engine, provider=provider, metrics=metrics)
    log.info("worker starting", topic=settings.topics.raw, batch_size=settings.worker.batch_size,
             metrics_port=settings.worker.web_port)
    fworker = faust.Worker(worker.app, loglevel=settings.log_level, override_logging=False, quiet=True)
    try:
        fworker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        worker.close()
        engine.dispose()
        log.info("worker stopped")
