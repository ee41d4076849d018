"""Health of what the API depends on: database (reachable, schema at head), broker (reachable, raw topic
present) and model (loaded, which version). Each check returns its own status so an operator sees which
part is broken; none raises."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine

from marketmood.api.schemas import ComponentHealth
from models.prediction import ClassifierProvider

BrokerCheck = Callable[[], ComponentHealth]


def database_health(engine: Engine) -> ComponentHealth:
    from storage import migrate
    from storage.db import DatabaseUnavailableError, ping, safe_url

    url = engine.url.render_as_string(hide_password=False)
    started = time.perf_counter()
    try:
        ping(url, timeout=3)
        current, heads = migrate.current(url), migrate.heads()
    except DatabaseUnavailableError as exc:
        return ComponentHealth(status="down", detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
        return ComponentHealth(status="down", detail=f"{safe_url(url)}: {type(exc).__name__}: {exc}")
    info = {"latency_ms": round((time.perf_counter() - started) * 1000, 1), "schema": list(current)}
    if current != heads:
        return ComponentHealth(status="degraded", detail=f"schema at {list(current)}, code expects {list(heads)}",
                               info=info)
    return ComponentHealth(status="ok", info=info)


def kafka_health(bootstrap: str | None, raw_topic: str, timeout_s: float = 3.0) -> ComponentHealth:
    """Connect with the admin client and look for the raw topic (workers cannot consume without it)."""
    if not bootstrap:
        return ComponentHealth(status="down", detail="no broker configured (MARKETMOOD_KAFKA_BOOTSTRAP)")
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

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
