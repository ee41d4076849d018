"""The stream worker: news.raw -> micro-batch -> classifier -> sinks (PostgreSQL, then Kafka) -> offset commit.

The guarantee (docs/pipeline.md): every record at or below a committed offset is either stored (article +
score) or on news.deadletter with a reason. It holds by construction:

* The worker owns its commit boundary. It reads with an aiokafka consumer in a consumer group with
  auto-commit OFF and commits, per partition, only the end of a batch that it has fully flushed:
  ``commit_batch`` reads "flush the database sink, flush the Kafka sink, then commit offsets". faust's
  agent/stream machinery is deliberately not used for this: ``noack_take`` restores auto-ack in its
  ``finally`` when the agent crashes, the agent supervisor restarts the agent while buffered records are
  acked without being processed, and the consumer commits past one-offset gaps. Those three made records
  vanish (issue 10); owning the loop removes them.
* Nothing in the batch path can skip a record: parsing never raises; classifier and row failures are
  isolated to the record (bisection) and dead-lettered with a reason; a classifier that fails even on a
  canary text, a database that refuses every write (down, read-only, permission denied, hung) or a broker
  that does not confirm all stall the batch and retry with capped back-off. Lag grows; nothing is lost.
* A record the broker can never take on news.deadletter (too large) is replaced by a stub (reason,
  coordinates, sha256, size), so the partition keeps flowing.
* Writes are idempotent on (article id, model version), so a replay after a crash or rebalance adds no
  row; news.scored is at-least-once (consumers de-duplicate on ``id`` + ``model_version``).
* Rebalance: on revocation the worker stops fetching and lets the batches in flight commit (bounded by
  ``drain_timeout_s``); a commit that arrives after the partition moved fails harmlessly (the new owner
  re-reads from the last committed offset). SIGTERM drains the same way, then leaves the group.

Two stages overlap (classify batch N+1 while batch N is written and published), with at most one prepared
batch waiting: throughput is that of the slower stage, not of their sum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import KafkaError

from models.prediction import ClassifierProvider
from storage.articles import ScoredArticle
from storage.progress import PartitionProgress, placeholders
from streams.executor import DaemonExecutor
from streams.metrics import WorkerMetrics
from streams.processing import (
    ClassifierUnavailableError,
    Copy,
    DeadLetter,
    RawRecord,
    Scored,
    build_rows,
    classify_accepted,
    copies_of_dead,
    deadletter_record,
    scored_event,
    validate_batch,
)
from streams.sinks import DatabaseSink, KafkaSink, OutRecord, retry_forever

log = structlog.get_logger(__name__)

StoryKey = Callable[[str], "str | None"]
IDLE_PROGRESS_S = 5.0  # how often an idle, caught-up worker refreshes its partitions' progress


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker needs to know; the composition root maps settings onto it."""

    raw_topic: str = "news.raw"
    scored_topic: str = "news.scored"
    deadletter_topic: str = "news.deadletter"
    group_id: str = "marketmood-worker"
    batch_size: int = 32
    batch_max_wait_s: float = 0.5
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    retry_max_s: float = 30.0
    drain_timeout_s: float = 30.0
    max_request_bytes: int = 1_048_576  # the producer's request limit; larger dead letters become stubs
    publish_scored: bool = True  # a shadow worker stores its scores but publishes no news.scored events


@dataclass
class PreparedBatch:
    """A classified batch waiting for its commit; nothing of it is committed yet."""

    records: list[RawRecord]
    dead: list[DeadLetter] = field(default_factory=list)
    rows: list[tuple[Scored, ScoredArticle]] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)  # identical copies: share their first copy's outcome
    infer_s: float = 0.0
    log_end: dict[int, int | None] = field(default_factory=dict)

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the offset after the batch's last record: what the commit moves to."""
        ends: dict[tuple[str, int], int] = {}
        for rec in self.records:
            key = (rec.topic, rec.partition)
            ends[key] = max(ends.get(key, 0), rec.offset + 1)
        return ends


class _Revocations(ConsumerRebalanceListener):
    def __init__(self, worker: PipelineWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.on_assigned(list(assigned))


class PipelineWorker:
    """One consumer-group member; see the module docstring for the guarantees."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        bootstrap: str,
        db_sink: DatabaseSink,
        provider: ClassifierProvider,
        story_key: StoryKey,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.db_sink = db_sink
        self.provider = provider
        self.story_key = story_key
        self.metrics = metrics or WorkerMetrics()
        self._infer_pool = DaemonExecutor("mm-classify")  # see streams/executor.py
        self._stop = asyncio.Event()
        self._fetching = asyncio.Event()
        self._fetching.set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.kafka_sink: KafkaSink | None = None
        self._positions: dict[int, int] = {}
        self._committed: dict[int, int] = {}  # partition -> last offset committed by this worker
        self._log_ends: dict[int, int] = {}  # partition -> log end from the broker's ListOffsets (lag loop)
        self._polls_seen: dict[int, int] = {}  # partition -> last fetch-response time (ms) an idle check saw
        self._last_idle_progress = time.monotonic()
        self._partitions_registered = False  # placeholder progress rows written since the last assignment
        db_sink.on_retry = self._on_retry("database")

    # ---- lifecycle ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Thread- and signal-safe: stop fetching, drain what is in flight, leave the group."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> None:
        """Consume until ``request_stop``; returns after a clean drain and group leave."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, max_request_size=cfg.max_request_bytes,
            request_timeout_ms=30_000, enable_idempotence=False,  # tansu lacks aiokafka idempotence (FACTS.md)
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=cfg.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=int(cfg.session_timeout_s * 1000),
            heartbeat_interval_ms=int(cfg.heartbeat_interval_s * 1000),
            max_poll_interval_ms=max(300_000, int(cfg.drain_timeout_s * 4000)),
            rebalance_timeout_ms=int(max(cfg.session_timeout_s, cfg.drain_timeout_s) * 1000) + 5000,
            fetch_max_bytes=max(cfg.max_request_bytes * 4, 50 * 1024 * 1024),
        )
        await self.producer.start()
        try:
            self.kafka_sink = KafkaSink(self.producer, max_retry_delay_s=min(cfg.retry_max_s, 10.0),
                                        on_retry=self._on_retry("kafka"), on_stub=self._on_stub)
            self.consumer.subscribe([cfg.raw_topic], listener=_Revocations(self))
            await self.consumer.start()
            log.info("worker consuming", topic=cfg.raw_topic, group=cfg.group_id, batch_size=cfg.batch_size)
            await self._consume()
        finally:
            await self._close()

    async def _close(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    await asyncio.wait_for(client.stop(), 15)
                except Exception as exc:  # noqa: BLE001 - best effort on the way out
                    log.warning("client did not stop cleanly", error=repr(exc))
        # bounded waits: a call stuck on a hung model or database is abandoned, not joined at interpreter exit
        self._infer_pool.close(timeout_s=10.0)
        self.db_sink.close()

    async def _consume(self) -> None:
        queue: asyncio.Queue[PreparedBatch] = asyncio.Queue(maxsize=1)
        committer = asyncio.create_task(self._commit_loop(queue), name="mm-commit")
        lag_timer = asyncio.create_task(self._lag_loop(), name="mm-lag")
        try:
            while not self._stop.is_set():
                await self._register_partitions()
                records = await self._fetch()
                if not records:
                    await self._idle_progress()
                    continue
                self._begin()
                step = asyncio.create_task(self._prepare_and_enqueue(records, queue))
                stopping = asyncio.create_task(self._stop.wait())
                await asyncio.wait({step, committer, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not step.done():
                    # A stop while this batch waits on a retrying classifier or behind a batch the committer
                    # cannot finish (database down): leave it uncommitted (it is re-read) and drain the rest
                    # below within drain_timeout_s, instead of ignoring SIGTERM until the dependency returns.
                    step.cancel()
                    self._end()
                    if committer.done():  # the committer died: surface its error (a bug), never skip
                        committer.result()
                    log.warning("stopping with a batch not yet handed to the committer; it will be re-read",
                                records=len(records))
                    break
                step.result()
        finally:
            lag_timer.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(queue.join()), self.config.drain_timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                log.warning("batches in flight not committed before stop; they will be re-read")
            committer.cancel()
            log.info("worker drained")

    async def _prepare_and_enqueue(self, records: list[RawRecord], queue: asyncio.Queue[PreparedBatch]) -> None:
        await queue.put(await self.prepare_batch(records))

    def _begin(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _fetch(self) -> list[RawRecord]:
        """Up to ``batch_size`` records, waiting at most ``batch_max_wait_s`` for a partial batch."""
        assert self.consumer is not None
        cfg = self.config
        records: list[RawRecord] = []
        deadline = time.monotonic() + cfg.batch_max_wait_s
        while len(records) < cfg.batch_size and not self._stop.is_set():
            if not self._fetching.is_set():  # a rebalance is draining: fetch nothing new
                await asyncio.sleep(0.05)
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                fetched = await self.consumer.getmany(timeout_ms=int(min(remaining, 0.25) * 1000),
                                                      max_records=cfg.batch_size - len(records))
            except UnicodeDecodeError as exc:
                records.extend(await self._isolate_undecodable(exc))
                break
            for tp, batch in fetched.items():
                records.extend(_to_record(m) for m in batch)
                self._positions[tp.partition] = batch[-1].offset + 1
        return records

    async def _isolate_undecodable(self, first_error: UnicodeDecodeError) -> list[RawRecord]:
        """Find the record aiokafka cannot unpack (a header name that is not UTF-8: any client may send one and
        the broker keeps it) and step past it, or every fetch raises again: a crash-loop that moves from worker
        to worker with the partition.

        The failed fetch moved no position, so nothing before the bad record is lost. Each owned partition is
        read one record at a time; where it raises, the position is the bad record's offset: it becomes an
        unreadable record (dead-lettered as ``undecodable_record`` with its coordinates; its bytes stay in
        the topic) and the consumer seeks past it. The good records read on the way are returned too.
        A record batch is parsed from its start, so the records after the bad one *in the same producer batch*
        raise as well: each is dead-lettered the same way (none is lost; a client that tolerates the header
        can replay them from the coordinates).

        The failed ``getmany`` did move the positions of the partitions it drained *before* it reached the bad
        one, and those records are never returned: every owned partition is first put back where this worker
        last handed records out (``_rewind_to_handed``), or they were skipped and the next commit went past them."""
        assert self.consumer is not None
        log.error("a fetched record cannot be unpacked; isolating it", error=str(first_error)[:300])
        out: list[RawRecord] = []
        if not await self._rewind_to_handed():
            return out  # stopping: nothing past the records handed out so far is committed
        for tp in list(self.consumer.assignment()):
            for _ in range(self.config.batch_size):
                try:
                    got = await self.consumer.getmany(tp, timeout_ms=1000, max_records=1)
                except UnicodeDecodeError as exc:
                    offset = await self.consumer.position(tp)
                    out.append(RawRecord(tp.topic, tp.partition, offset, None, None, unreadable=(
                        f"the Kafka client cannot unpack this record or one before it in its producer batch: "
                        f"{type(exc).__name__}: {exc}")[:500]))
                    self.consumer.seek(tp, offset + 1)
                    self._positions[tp.partition] = offset + 1
                    continue
                if not got:
                    break
                for message in got.get(tp, []):
                    out.append(_to_record(message))
                    self._positions[tp.partition] = message.offset + 1
        return out

    async def _rewind_to_handed(self) -> bool:
        """Seek every owned partition to the offset after the last record this worker handed out, or to its
        committed offset when none was handed out since the assignment (the consumer started there). False when
        a stop came while the committed offset could not be read (the broker is unreachable)."""
        assert self.consumer is not None
        for tp in list(self.consumer.assignment()):
            position = self._positions.get(tp.partition)
            while position is None:
                try:
                    committed = await asyncio.wait_for(self.consumer.committed(tp), 10)
                except (KafkaError, asyncio.TimeoutError) as exc:
                    if self._stop.is_set():
                        return False
                    log.warning("cannot read the committed offset to rewind to; retrying", partition=tp.partition,
                                error=repr(exc)[:300])
                    await asyncio.sleep(1.0)
                    continue
                # no commit yet: the consumer started at the log start (auto_offset_reset="earliest"); offset 0
                # below the log start is reset to it the same way
                position = committed if committed is not None else 0
            try:
                self.consumer.seek(tp, position)
            except KafkaError:  # taken away by a rebalance meanwhile: its new owner starts at the committed offset
                continue
        return True

    # ---- stage 1: validate and classify -------------------------------------------------------------
    async def prepare_batch(self, records: Sequence[RawRecord]) -> PreparedBatch:
        """Validate, classify and build rows; nothing is committed here and nothing escapes as an error."""
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        try:
            batch = await self._prepare(list(records))
        except Exception as exc:  # noqa: BLE001 - a bug somewhere: isolate it record by record
            log.error("batch preparation failed; preparing records one by one", error=repr(exc))
            batch = PreparedBatch(list(records))
            for record in records:
                try:
                    single = await self._prepare([record])
                except Exception as one_exc:  # noqa: BLE001
                    batch.dead.append(DeadLetter(record, "internal_error", f"{type(one_exc).__name__}: {one_exc}"[:500]))
                    continue
                batch.dead += single.dead
                batch.rows += single.rows
                batch.copies += single.copies
        for rec in records:
            if rec.partition not in batch.log_end:
                batch.log_end[rec.partition] = self._highwater(TopicPartition(rec.topic, rec.partition))
        return batch

    def _highwater(self, tp: TopicPartition) -> int | None:
        """The partition's cached log end, or None once it is no longer ours: aiokafka asserts on a partition
        a rebalance took away while a batch of it was being prepared (the worker crashed on that)."""
        if self.consumer is None or tp not in self.consumer.assignment():
            return None
        return self.consumer.highwater(tp)

    async def _prepare(self, records: list[RawRecord]) -> PreparedBatch:
        loop = asyncio.get_running_loop()
        plan = validate_batch(records)
        batch = PreparedBatch(records, dead=list(plan.dead), copies=list(plan.copies))
        if not plan.accepted:
            return batch

        async def classify() -> tuple[list[Scored], list[DeadLetter]]:
            classifier = self.provider.current()  # once per batch: hot reloads switch between batches
            with self.metrics.call_in_flight("classify"):
                return await loop.run_in_executor(self._infer_pool, classify_accepted, classifier, plan.accepted)

        started = time.perf_counter()
        scored, refused = await retry_forever(
            classify, retryable=lambda e: "classifier" if isinstance(e, ClassifierUnavailableError) else None,
            on_retry=self._on_retry("classifier"), max_delay_s=self.config.retry_max_s)
        batch.infer_s = time.perf_counter() - started
        self.metrics.inference_seconds.observe(batch.infer_s)
        batch.dead += refused
        rows, unbuildable = build_rows(scored, self.story_key)
        batch.rows = rows
        batch.dead += unbuildable
        if scored:
            self.metrics.model_info.clear()
            self.metrics.model_info.labels(version=scored[0].prediction.model_version).set(1)
        return batch

    # ---- stage 2: flush sinks, then commit offsets --------------------------------------------------
    async def _commit_loop(self, queue: asyncio.Queue[PreparedBatch]) -> None:
        while True:
            prepared = await queue.get()
            try:
                await self._commit_until_done(prepared)
            finally:
                self._end()
                queue.task_done()

    async def _commit_until_done(self, batch: PreparedBatch) -> None:
        """``commit_batch``, retried on anything unexpected (writes are idempotent, so a retry is safe)."""
        await retry_forever(lambda: self.commit_batch(batch), retryable=lambda e: "internal",
                            on_retry=self._on_retry("commit"), max_delay_s=self.config.retry_max_s)

    async def commit_batch(self, batch: PreparedBatch) -> None:
        """Flush the database sink, flush the Kafka sink, then commit the batch's offsets."""
        assert self.kafka_sink is not None
        now = datetime.now(timezone.utc)
        by_article = {id(item): s for s, item in batch.rows}
        for _, item in batch.rows:
            self.db_sink.add(item)
        for progress in self._progress(batch, now):
            self.db_sink.add_progress(progress)
        with self.metrics.call_in_flight("database"):
            db = await self.db_sink.flush()
        self.metrics.db_seconds.observe(db.seconds)
        dead = list(batch.dead) + [
            DeadLetter(by_article[id(item)].accepted.record, reason, detail) for item, reason, detail in db.refused
        ]
        dead_copies = copies_of_dead(batch.copies, dead)  # a copy shares its first copy's fate, never none
        dead += dead_copies
        stored_ids = {id(item) for item in db.stored}
        if self.config.publish_scored:
            for _, item in batch.rows:
                if id(item) in stored_ids:
                    key, value = scored_event(by_article[id(item)], now)
                    self.kafka_sink.add(OutRecord(self.config.scored_topic, key, value, []))
        for d in dead:
            self.kafka_sink.add(self._deadletter_out(d, now))
        await self.kafka_sink.flush()
        await self._commit_offsets(batch.next_offsets())
        self.metrics.scored.inc(len(db.stored))
        self.metrics.duplicates.inc(len(batch.copies) - len(dead_copies))
        for d in dead:
            self.metrics.deadlettered.labels(reason=d.reason).inc()
            if d.reason == "conflicting_duplicate":
                log.warning("conflicting copy of an article dead-lettered (first write wins)",
                            partition=d.record.partition, offset=d.record.offset, detail=d.detail)

    def _deadletter_out(self, dead: DeadLetter, now: datetime) -> OutRecord:
        key, value, headers = deadletter_record(dead, now)
        return OutRecord(self.config.deadletter_topic, key, value, headers,
                         fallback=lambda: deadletter_record(dead, now, max_bytes=0))

    def _progress(self, batch: PreparedBatch, now: datetime) -> list[PartitionProgress]:
        event_times: dict[int, datetime] = {}
        for s, item in batch.rows:
            # an article without published_at is stored at the write's time; so is its progress. (The Kafka
            # record time was used before: a producer whose clock ran ahead raised the partition's event time
            # for good, and the alert watermark with it, past records still to come.)
            t = item.published_at or now
            if t is not None:
                p = s.accepted.record.partition
                event_times[p] = max(event_times.get(p, t), t)
        return [
            PartitionProgress(topic, partition, next_offset, batch.log_end.get(partition), event_times.get(partition))
            for (topic, partition), next_offset in batch.next_offsets().items()
        ]

    async def _commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
            self._committed.update({p: o for (_, p), o in offsets.items()})
        except KafkaError as exc:  # partition moved in a rebalance: the new owner re-reads (idempotent)
            self.metrics.commit_failures.inc()
            log.warning("offset commit refused; the partition's new owner will re-read", error=repr(exc),
                        offsets={f"{t}-{p}": o for (t, p), o in offsets.items()})

    async def _idle_progress(self) -> None:
        """While caught up and idle, refresh the owned partitions' progress every few seconds, so the alert
        watermark follows the clock on a quiet stream instead of stopping at the last commit.

        The claim "read to the end as of T" must hold for T, or the watermark runs ahead of records still in
        Kafka and the alert service judges their windows half-empty. The consumer's cached highwater can be
        minutes old (a frozen worker, a long database retry; tansu's ListOffsets is no help, it undercounts
        multi-record batches), so T is when the *previous* check saw the partition's last fetch response:
        the fetcher keeps one fetch per broker in flight, so a response processed after that moment was
        requested after it, and its highwater covers every record appended before it."""
        now = time.monotonic()
        if self.consumer is None or self._inflight or now - self._last_idle_progress < IDLE_PROGRESS_S:
            return
        self._last_idle_progress = now
        rows = []
        for tp in list(self.consumer.assignment()):
            highwater = self._highwater(tp)  # the loop awaits: a rebalance may take tp away meanwhile
            if highwater is None:  # not ours any more (aiokafka asserts on it below), or never fetched yet
                continue
            polled_ms = self.consumer.last_poll_timestamp(tp)
            previous_ms = self._polls_seen.get(tp.partition)
            if polled_ms is not None:
                self._polls_seen[tp.partition] = polled_ms
            if highwater is None or polled_ms is None or previous_ms is None or polled_ms <= previous_ms:
                continue  # no fetch response since the last check: nothing new can be claimed
            position = self._positions.get(tp.partition)
            if position is None:
                try:
                    position = await asyncio.wait_for(self.consumer.position(tp), 2)
                except (KafkaError, asyncio.TimeoutError):
                    continue
            if position >= highwater:
                checked_at = datetime.fromtimestamp(previous_ms / 1000, tz=timezone.utc)
                rows.append(PartitionProgress(tp.topic, tp.partition, position, highwater, None,
                                              end_checked_at=checked_at))
        if rows:
            await self.db_sink.try_progress(rows)  # one attempt: a down database must not stop the fetching

    async def _register_partitions(self) -> None:
        """Once per assignment, a placeholder progress row for every partition of the raw topic (owned or not,
        existing rows untouched): the alert watermark then waits for a partition whose own worker has not
        committed yet (crash-looping before its first batch) instead of being taken over the others only."""
        if self._partitions_registered or self.consumer is None:
            return
        partitions = self.consumer.partitions_for_topic(self.config.raw_topic)
        if partitions:
            self._partitions_registered = await self.db_sink.try_progress(
                placeholders(self.config.raw_topic, sorted(partitions)))

    # ---- rebalance ----------------------------------------------------------------------------------
    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Let the batches in flight commit while the partitions are still ours (bounded)."""
        self._fetching.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout_s)
        except asyncio.TimeoutError:
            log.warning("rebalance: batches in flight not committed in time; they will be re-read")
        for tp in revoked:
            self._positions.pop(tp.partition, None)
            self._committed.pop(tp.partition, None)
            self._log_ends.pop(tp.partition, None)
            self._polls_seen.pop(tp.partition, None)
            try:
                self.metrics.lag.remove(str(tp.partition))
            except KeyError:
                pass
        log.info("partitions revoked", partitions=sorted(tp.partition for tp in revoked))

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        self._partitions_registered = False  # the topic may have grown partitions since
        self._fetching.set()
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    # ---- metrics ------------------------------------------------------------------------------------
    async def _lag_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            await self._refresh_log_ends()
            self.update_lag()

    async def _refresh_log_ends(self) -> None:
        """Ask the broker for the owned partitions' log ends. The fetch response's highwater alone freezes while
        the worker is stalled (aiokafka does not fetch a partition whose records it still buffers), so during
        a database outage the lag stayed flat while the backlog grew. tansu answers with the last producer
        batch's base offset + 1 (FACTS.md), a lower bound: the larger of the two ends is used."""
        if self.consumer is None or not (owned := list(self.consumer.assignment())):
            return
        try:
            ends = await asyncio.wait_for(self.consumer.end_offsets(owned), 2)
        except (KafkaError, asyncio.TimeoutError) as exc:
            log.debug("log end refresh skipped", error=repr(exc))
            return
        self._log_ends.update({tp.partition: end for tp, end in ends.items() if end is not None})

    def update_lag(self) -> None:
        """Set the lag gauge for the partitions this worker owns now (labels of lost ones are removed): records
        between the log end and this worker's last committed offset (fetched but uncommitted ones count)."""
        if self.consumer is None:
            return
        owned = {tp.partition: tp for tp in self.consumer.assignment()}
        for label in list(_gauge_labels(self.metrics.lag)):
            if int(label) not in owned:
                self.metrics.lag.remove(label)
        for partition, tp in owned.items():
            ends = [end for end in (self._highwater(tp), self._log_ends.get(partition)) if end is not None]
            if not ends:
                continue
            end = max(ends)
            done = self._committed.get(partition, self._positions.get(partition, end))
            self.metrics.lag.labels(partition=str(partition)).set(max(0, end - done))

    def _on_retry(self, what: str) -> Callable[[str, BaseException, int, float], None]:
        def on_retry(kind: str, exc: BaseException, attempt: int, delay: float) -> None:
            self.metrics.retries.labels(stage=what, kind=kind).inc()
            text = str(exc).strip().splitlines()
            log.warning(f"{what} failed; retrying", kind=kind, attempt=attempt, retry_in_s=round(delay, 2),
                        error=(text[0] if text else repr(exc))[:300])
        return on_retry

    def _on_stub(self, record: OutRecord, exc: BaseException) -> None:
        self.metrics.deadletter_stubs.inc()
        log.warning("dead letter too large for the broker; sending a stub", error=repr(exc), size=len(record.value))


def _gauge_labels(gauge: Any) -> list[str]:
    return [labels[0] for labels in gauge._metrics]  # prometheus_client keeps children by label tuple


def _to_record(msg: Any) -> RawRecord:
    return RawRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        headers=[(str(k), bytes(v) if v is not None else b"") for k, v in (msg.headers or [])],
        timestamp_ms=int(msg.timestamp) if msg.timestamp and msg.timestamp > 0 else None,
    )
