"""The worker's outputs as sinks: ``add()`` items during a batch, ``flush()`` them at the commit boundary.

In the spirit of quixstreams' sinks: the worker's commit is "flush every sink, then commit offsets", so an
offset is committed only after everything it produced is durable. Two sinks exist:

* ``DatabaseSink``: articles + scores (and the partition progress) in ONE transaction per batch. Errors are
  told apart (``storage.db.classify_db_error``): transient and systemic ones stall and retry with capped
  back-off; a data error isolates the refused rows by bisection, which come back to the caller to be
  dead-lettered. Copies of an id whose stored content differs (first write wins) come back the same way.
* ``KafkaSink``: news.scored and news.deadletter records, flushed by waiting for every broker ack. A record
  the broker can never take (too large) is replaced by a stub; other send errors are retried.

Both retry with one policy (``retry_forever``), so a stalled dependency shows as lag and a log line per
attempt, never as a skipped record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from sqlalchemy import Connection, Engine

from storage.articles import ScoredArticle, UpsertResult
from storage.db import DbErrorKind, classify_db_error
from storage.progress import PartitionProgress
from streams.executor import DaemonExecutor

log = structlog.get_logger(__name__)

T = TypeVar("T")
ItemT = TypeVar("ItemT", contravariant=True)
Headers = list[tuple[str, bytes]]


class Sink(Protocol[ItemT]):
    """Collects a batch's outputs; ``flush`` makes them durable (or raises, leaving the batch uncommitted).

    ``DatabaseSink`` (ScoredArticle items) and ``KafkaSink`` (OutRecord items) satisfy it.
    """

    def add(self, item: ItemT) -> None: ...

    async def flush(self) -> Any: ...


async def retry_forever(
    attempt: Callable[[], Awaitable[T]],
    *,
    retryable: Callable[[BaseException], str | None],
    on_retry: Callable[[str, BaseException, int, float], None],
    first_delay_s: float = 0.2,
    max_delay_s: float = 30.0,
) -> T:
    """Run ``attempt`` until it succeeds or raises an error ``retryable`` does not name (returns a label).

    The worker's one retry policy: capped exponential back-off, never giving up on a retryable error
    (the batch stays uncommitted and lag grows, which the metrics show).
    """
    delay, tries = first_delay_s, 0
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted by ``retryable``
            kind = retryable(exc)
            if kind is None:
                raise
            tries += 1
            on_retry(kind, exc, tries, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


BatchWriter = Callable[[Connection, Sequence[ScoredArticle], Sequence[PartitionProgress]], UpsertResult]


@dataclass
class DbFlushResult:
    """What the database refused: (item, reason, detail) to dead-letter, plus timing."""

    refused: list[tuple[ScoredArticle, str, str]] = field(default_factory=list)
    stored: list[ScoredArticle] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, committed: Sequence[ScoredArticle], conflicts: Sequence[tuple[str, str | None]]) -> None:
        """Record a committed group: conflicting copies are refused, the rest stored."""
        conflicting = set(conflicts)
        for item in committed:
            if (item.id, item.content_sha256) in conflicting:
                self.refused.append((item, "conflicting_duplicate", _CONFLICT))
            else:
                self.stored.append(item)


class DatabaseSink:
    """Articles + scores + partition progress, one transaction per flush (see the module docstring)."""

    def __init__(self, engine: Engine, writer: BatchWriter, *, max_retry_delay_s: float = 30.0,
                 on_retry: Callable[[str, BaseException, int, float], None] | None = None,
                 best_effort_timeout_s: float = 10.0) -> None:
        self.engine = engine
        self.writer = writer
        self.max_retry_delay_s = max_retry_delay_s
        self.best_effort_timeout_s = best_effort_timeout_s
        self.on_retry = on_retry or _log_retry("database")
        self._pool = DaemonExecutor("mm-db")  # a write stuck on a hung server must not keep the process alive
        self._items: list[ScoredArticle] = []
        self._progress: list[PartitionProgress] = []

    def add(self, item: ScoredArticle) -> None:
        self._items.append(item)

    def add_progress(self, progress: PartitionProgress) -> None:
        self._progress.append(progress)

    async def flush(self) -> DbFlushResult:
        items, progress = self._items, self._progress
        self._items, self._progress = [], []
        started = time.perf_counter()
        result = DbFlushResult()
        refusal, conflicts = await self._write(items, progress)
        if refusal is None:
            result.add(items, conflicts)
        else:
            log.warning("batch refused by the database; isolating rows", rows=len(items), error=_first_line(refusal))
            await self._isolate(items, result)
            await self._write([], progress)  # progress alone carries no row data: only transient/systemic errors
        result.seconds = time.perf_counter() - started
        return result

    async def _isolate(self, items: list[ScoredArticle], result: DbFlushResult) -> None:
        """Bisect ``items``: halves that commit are kept, a lone refused row is reported."""
        if not items:
            return
        refusal, conflicts = await self._write(items, [])
        if refusal is None:
            result.add(items, conflicts)
        elif len(items) == 1:
            result.refused.append((items[0], "db_rejected", _first_line(refusal)[:500]))
        else:
            middle = len(items) // 2
            await self._isolate(items[:middle], result)
            await self._isolate(items[middle:], result)

    async def _write(
        self, items: Sequence[ScoredArticle], progress: Sequence[PartitionProgress]
    ) -> tuple[BaseException | None, tuple[tuple[str, str | None], ...]]:
        """Commit once, retrying transient and systemic errors.

        Returns (None, conflicting ids) on success, or (the error, ()) when the data itself is refused.
        """
        async def attempt() -> tuple[BaseException | None, tuple[tuple[str, str | None], ...]]:
            try:
                outcome = await self._transaction(items, progress)
            except Exception as exc:  # noqa: BLE001 - sorted below
                if classify_db_error(exc) is DbErrorKind.DATA:
                    return exc, ()
                raise
            return None, tuple(outcome.conflicts)

        def retryable(exc: BaseException) -> str | None:
            kind = classify_db_error(exc)
            if kind is DbErrorKind.SYSTEMIC:
                # A pooled connection keeps what its server was when it connected: read-only after a
                # failover to a replica, or a role's old grants. Reconnect for the next attempt.
                self.engine.dispose()
            return None if kind is DbErrorKind.DATA else kind.value

        return await retry_forever(attempt, retryable=retryable, on_retry=self.on_retry,
                                   max_delay_s=self.max_retry_delay_s)

    async def try_progress(self, progress: Sequence[PartitionProgress]) -> bool:
        """Write progress rows alone, ONE attempt (a best-effort refresh: it must never stall its caller).

        Bounded by ``best_effort_timeout_s``: a database that hangs (a frozen server or a black-holed connection:
        no statement_timeout fires, keepalives are answered) would otherwise hold the worker's main loop, and with
        it every stop request, for ever. The abandoned attempt stays on the DB thread; one still queued behind a
        hung write is cancelled and never runs."""
        try:
            await asyncio.wait_for(self._transaction([], progress), self.best_effort_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the next refresh or the next batch carries the progress
            log.debug("progress refresh skipped", error=_first_line(exc))
            return False
        return True

    async def _transaction(self, items: Sequence[ScoredArticle], progress: Sequence[PartitionProgress]) -> UpsertResult:
        """One transaction of the writer, on the sink's own DB thread (off the event loop)."""

        def run() -> UpsertResult:
            with self.engine.begin() as conn:
                return self.writer(conn, items, progress)

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel queued writes; wait up to ``timeout_s`` for the one in progress, then abandon it (uncommitted)."""
        self._pool.close(timeout_s)


_CONFLICT = "id already stored with different content (first write wins)"


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    #: what to send instead when the broker can never take this record (too large); None: not replaceable
    fallback: Callable[[], tuple[bytes | None, bytes, Headers]] | None = None


class Producer(Protocol):
    """The part of aiokafka's AIOKafkaProducer the sink uses."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   headers: Headers | None = None) -> asyncio.Future[Any]: ...


class KafkaSink:
    """Records to publish, flushed by waiting for every broker acknowledgement."""

    def __init__(self, producer: Producer, *, max_retry_delay_s: float = 10.0,
                 on_retry: Callable[[str, BaseException, int, float], None] | None = None,
                 on_stub: Callable[[OutRecord, BaseException], None] | None = None) -> None:
        self.producer = producer
        self.max_retry_delay_s = max_retry_delay_s
        self.on_retry = on_retry or _log_retry("kafka")
        self.on_stub = on_stub
        self._records: list[OutRecord] = []

    def add(self, record: OutRecord) -> None:
        self._records.append(record)

    def __len__(self) -> int:
        return len(self._records)

    async def flush(self) -> int:
        """Send everything added since the last flush; returns the number of records confirmed."""
        records, self._records = self._records, []
        pending = list(records)

        async def attempt() -> None:
            nonlocal pending
            futures = [(r, await self._send(r)) for r in pending]
            failed: list[OutRecord] = []
            first_error: BaseException | None = None
            for record, future in futures:
                try:
                    await future
                except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
                    failed.append(self._stub(record, exc))
                except KafkaError as exc:
                    failed.append(record)
                    first_error = first_error or exc
            pending = failed
            if first_error is not None:
                raise first_error
            if pending:  # stubs to send
                await attempt()

        await retry_forever(attempt, retryable=lambda e: "kafka" if isinstance(e, KafkaError) else None,
                            on_retry=self.on_retry, max_delay_s=self.max_retry_delay_s)
        return len(records)

    async def _send(self, record: OutRecord) -> asyncio.Future[Any]:
        try:
            return await self.producer.send(record.topic, record.value, key=record.key, headers=record.headers)
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:  # refused client-side, before sending
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
            return future

    def _stub(self, record: OutRecord, exc: BaseException) -> OutRecord:
        if record.fallback is None:
            raise RuntimeError(f"record for {record.topic} is too large and has no stub") from exc
        if self.on_stub is not None:
            self.on_stub(record, exc)
        key, value, headers = record.fallback()
        return OutRecord(record.topic, key, value, headers)


def _log_retry(what: str) -> Callable[[str, BaseException, int, float], None]:
    def on_retry(kind: str, exc: BaseException, attempt: int, delay: float) -> None:
        log.warning(f"{what} write failed; retrying", kind=kind, attempt=attempt, retry_in_s=round(delay, 2),
                    error=_first_line(exc))
    return on_retry


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]
