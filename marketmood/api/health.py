"""Health of what the API depends on: database (reachable, schema at head), broker (reachable, raw topic
present) and model (loaded, which version). Each check returns its own status so an operator sees which
part is broken; none raises.

``/health`` is unauthenticated, so it must be cheap whatever a client does: the database check borrows a
connection from the API's bounded pool (never opens its own), the expected schema heads are read once,
and :class:`CachedHealth` runs at most one check at a time and serves its result for a few seconds to
everyone who asks meanwhile (200 concurrent probes cost one database query and one broker connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio.to_thread
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc

from marketmood.api.schemas import ComponentHealth
from models.prediction import ClassifierProvider
from storage import migrate
from storage.db import safe_url

BrokerCheck = Callable[[], ComponentHealth]
_CHECK_TIMEOUT_MS = 2000


class DatabaseHealth:
    """Reachable and at the shipped schema heads, checked on a pooled connection with a short timeout."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.heads = migrate.heads()  # reads the migration scripts: once, not per request

    def __call__(self) -> ComponentHealth:
        started = time.perf_counter()
        try:
            with self.engine.connect() as conn:
                conn.execute(text(f"SET LOCAL statement_timeout = {_CHECK_TIMEOUT_MS}"))
                current = tuple(sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()))
        except sa_exc.TimeoutError:
            return ComponentHealth(status="degraded", detail="all API database connections are busy")
        except sa_exc.DBAPIError as exc:
            first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            return ComponentHealth(status="down", detail=f"{safe_url(str(self.engine.url))}: {first}")
        except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
            return ComponentHealth(status="down", detail=f"{type(exc).__name__}: {exc}")
        info = {"latency_ms": round((time.perf_counter() - started) * 1000, 1), "schema": list(current)}
        if current != self.heads:
            return ComponentHealth(status="degraded", detail=f"schema at {list(current)}, code expects {list(self.heads)}",
                                   info=info)
        return ComponentHealth(status="ok", info=info)


def kafka_health(bootstrap: str | None, raw_topic: str, timeout_s: float = 3.0) -> ComponentHealth:
    """Connect with the admin client and look for the raw topic (workers cannot consume without it)."""
    if not bootstrap:
        return ComponentHealth(status="down", detail="no broker configured (MARKETMOOD_KAFKA_BOOTSTRAP)")

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="marketmood-api-health",
                                 request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    except (KafkaError, OSError, ValueError) as exc:
        return ComponentHealth(status="down", detail=f"cannot reach broker at {bootstrap}: {type(exc).__name__}")
    try:
        topics = set(admin.list_topics())
    except (KafkaError, OSError) as exc:
        return ComponentHealth(status="down", detail=f"broker at {bootstrap} did not answer: {type(exc).__name__}")
    finally:
        admin.close()
    info = {"bootstrap": bootstrap, "topics": len(topics)}
    if raw_topic not in topics:
        return ComponentHealth(status="degraded", detail=f"topic {raw_topic} does not exist", info=info)
    return ComponentHealth(status="ok", info=info)


def model_health(provider: ClassifierProvider) -> ComponentHealth:
    try:
        classifier = provider.current()
    except Exception as exc:  # noqa: BLE001
        return ComponentHealth(status="down", detail=f"no model loaded: {type(exc).__name__}: {exc}")
    describe = getattr(classifier, "describe", None)
    info = describe() if callable(describe) else {"model_version": classifier.model_version}
    return ComponentHealth(status="ok", info=info)


def overall(components: dict[str, ComponentHealth]) -> str:
    statuses = {c.status for c in components.values()}
    if statuses == {"ok"}:
        return "ok"
    return "down" if "down" in statuses else "degraded"


def _guarded(check: Callable[[], ComponentHealth]) -> ComponentHealth:
    """Run one check; an exception it lets through is that component down, not a 500 that hides the others
    (the broker check, for one, reads a state file and signals the pids in it)."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
        return ComponentHealth(status="down", detail=f"check failed: {type(exc).__name__}: {exc}")


class CachedHealth:
    """All component checks, run by one caller at a time in a worker thread, the result kept ``ttl_s`` seconds.

    Waiting callers hold no thread and no connection: they await the running check and share its result.
    """

    def __init__(self, checks: dict[str, Callable[[], ComponentHealth]], ttl_s: float) -> None:
        self.checks = checks
        self.ttl_s = ttl_s
        self.runs = 0  # how many times the checks really ran (the rest were served from the cache)
        self._lock: asyncio.Lock | None = None
        self._result: dict[str, ComponentHealth] | None = None
        self._at = 0.0

    def _fresh(self) -> bool:
        return self._result is not None and time.monotonic() - self._at < self.ttl_s

    def _run(self) -> dict[str, ComponentHealth]:
        self.runs += 1
        return {name: _guarded(check) for name, check in self.checks.items()}

    async def get(self) -> dict[str, ComponentHealth]:
        if self._lock is None:
            self._lock = asyncio.Lock()  # created on the serving loop
        if self._fresh():
            return self._result  # type: ignore[return-value]
        async with self._lock:
            if not self._fresh():
                self._result = await anyio.to_thread.run_sync(self._run)
                self._at = time.monotonic()
            return self._result  # type: ignore[return-value]
