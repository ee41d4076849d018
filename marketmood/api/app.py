"""The FastAPI application, built by a factory from injected dependencies (classifier, database, broker check).

Tests build it with the real engine and a real PostgreSQL; ``marketmood api`` builds it from settings. Reads
are open; writes (acknowledging alerts, feedback) need a bearer token from ``settings.api.tokens``.

Under abuse: ``/classify`` is rate-limited per client (429 + Retry-After), ``/health`` is served from a
short cache filled by one check at a time, and every database access borrows from the one bounded pool of
``deps.db`` (a request that cannot get a connection within ``db_pool_timeout_s`` is answered 503), so no
client can exhaust the database's connections. Other areas add their routers with ``app.include_router``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from alerts.lifecycle import acknowledge as acknowledge_alert
from marketmood.api.auth import TokenIdentity, authenticate, parse_tokens
from marketmood.api.feedback import feedback_router
from marketmood.api.health import CachedHealth, DatabaseHealth, model_health, overall
from marketmood.api.limits import BodySizeLimit, RateLimiter, client_key
from marketmood.api.metrics import ApiMetrics, RequestMetrics
from marketmood.api.schemas import (
    AlertOut,
    ClassifyRequest,
    ClassifyResponse,
    ComponentHealth,
    HealthResponse,
)
from marketmood.api.sentiment import router as sentiment_router
from marketmood.settings import ApiSettings
from models.prediction import ClassifierProvider, InvalidTextError
from storage.alerts import list_alerts


@dataclass
class ApiDependencies:
    """Everything the API talks to; build it once per process (or per test)."""

    settings: ApiSettings
    provider: ClassifierProvider
    db: Engine
    broker_check: Callable[[], ComponentHealth]
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    classify_limiter: RateLimiter | None = None  # default: from settings (classify_per_minute, classify_burst)


class ApiError(Exception):
    """A client error with a readable message and, for batch inputs, the offending index."""

    def __init__(self, status_code: int, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.index = status_code, message, index


AlertState = Literal["open", "firing", "acknowledged", "silenced", "resolved"]


def per_client_rate(limiter: RateLimiter, per_minute: float, burst: int) -> Callable[[Request], Awaitable[None]]:
    """A dependency taking one token per request from the client's bucket, 429 + Retry-After when empty; async,
    so a refused request never waits for a worker thread."""

    async def rate(request: Request) -> None:
        wait = limiter.acquire(client_key(request.client.host if request.client else None))
        if wait > 0:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                                f"rate limit of {per_minute:g} requests per minute (burst {burst}) exceeded; "
                                f"retry in {wait:.1f} s", headers={"Retry-After": limiter.retry_after(wait)})

    return rate


def create_app(deps: ApiDependencies) -> FastAPI:
    app = FastAPI(
        title="MarketMood API",
        version="0.1.0",
        description="Topic and sentiment of financial news: classify texts, alerts, analyst feedback, health.",
    )
    tokens = parse_tokens(deps.settings.tokens)
    bearer = HTTPBearer(auto_error=False, description="A token from MARKETMOOD_API__TOKENS.")
    limiter = deps.classify_limiter or RateLimiter(deps.settings.classify_per_minute, deps.settings.classify_burst,
                                                   deps.settings.rate_limit_clients)
    health_cache = CachedHealth({"database": DatabaseHealth(deps.db), "broker": deps.broker_check,
                                 "model": lambda: model_health(deps.provider)}, ttl_s=deps.settings.health_cache_s)

    classify_rate = per_client_rate(limiter, deps.settings.classify_per_minute, deps.settings.classify_burst)
    # /sentiment is anonymous and each request may run a database query for up to the statement timeout: without
    # a limit one client could hold every pooled connection and turn the other endpoints into 503s.
    sentiment_rate = per_client_rate(
        RateLimiter(deps.settings.sentiment_per_minute, deps.settings.sentiment_burst, deps.settings.rate_limit_clients),
        deps.settings.sentiment_per_minute, deps.settings.sentiment_burst)

    # Closures are not visible to FastAPI's annotation resolution: use the default-value form of Depends.
    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> TokenIdentity:
        if not tokens:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "writes are disabled: no API tokens configured",
                                headers={"WWW-Authenticate": "Bearer"})
        identity = authenticate(credentials.credentials, tokens) if credentials is not None else None
        if identity is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        return identity

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, Any] = {"detail": exc.message}
        if exc.index is not None:
            body["index"] = exc.index
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(sa_exc.TimeoutError)
    async def _pool_exhausted(request: Request, exc: sa_exc.TimeoutError) -> JSONResponse:
        return JSONResponse({"detail": "database busy: no free connection in the API's pool"}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(sa_exc.OperationalError)
    async def _database_down(request: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        if getattr(exc.orig, "pgcode", None) == "57014":  # query_canceled: the API's statement_timeout
            return JSONResponse({"detail": "query cancelled: it ran longer than the API's statement timeout "
                                           "(api.db_statement_timeout_s); narrow the range or use a larger interval"},
                                status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})

    @app.post("/classify", response_model=ClassifyResponse, tags=["model"],
              dependencies=[Depends(classify_rate)],
              responses={413: {"description": "Too many texts or a text too long"},
                         422: {"description": "An empty or invalid text (the body names its index)"},
                         429: {"description": "Per-client rate limit exceeded (see Retry-After)"}})
    def classify(body: ClassifyRequest) -> ClassifyResponse:
        """Topic and sentiment for each text, in input order."""
        limits = deps.settings
        if len(body.texts) > limits.max_texts:
            raise ApiError(413, f"batch of {len(body.texts)} texts exceeds the limit of {limits.max_texts}")
        for index, text in enumerate(body.texts):
            if len(text) > limits.max_text_chars:
                raise ApiError(413, f"text at index {index} has {len(text)} characters; "
                                    f"the limit is {limits.max_text_chars}", index)
        classifier = deps.provider.current()
        try:
            predictions = classifier.classify(body.texts)
        except InvalidTextError as exc:
            raise ApiError(422, str(exc), exc.index) from None
        deps.metrics.texts.inc(len(predictions))
        return ClassifyResponse(model_version=classifier.model_version,
                                predictions=[p.to_dict() for p in predictions])  # type: ignore[misc]

    @app.get("/alerts", response_model=list[AlertOut], tags=["alerts"])
    def alerts(state: AlertState | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Newest alerts first; ``state=open`` means not resolved."""

        with deps.db.connect() as conn:
            return list_alerts(conn, state=state, limit=limit)

    @app.post("/alerts/{alert_id}/ack", response_model=AlertOut, tags=["alerts"],
              responses={401: {"description": "Missing or invalid token"}, 404: {"description": "No such alert"}})
    def acknowledge(alert_id: int, identity: TokenIdentity = Depends(require_token)) -> dict[str, Any]:
        """Acknowledge an open alert (stops escalation); a resolved alert is returned unchanged."""

        with deps.db.begin() as conn:
            alert = acknowledge_alert(conn, alert_id, identity.name)
        if alert is None:
            raise ApiError(404, f"alert {alert_id} does not exist")
        return alert

    feedback_limiter = (RateLimiter(deps.settings.feedback_per_minute, deps.settings.feedback_burst,
                                    deps.settings.rate_limit_clients) if deps.settings.feedback_per_minute else None)
    app.include_router(feedback_router(deps.db, require_token, feedback_limiter, deps.settings.max_text_chars))

    @app.get("/health", response_model=HealthResponse, tags=["operations"],
             responses={503: {"model": HealthResponse, "description": "A component is down or degraded"}})
    async def health(response: Response) -> HealthResponse:
        """Database, broker and model, each with its own status; 503 unless all are ok (cached a few seconds)."""
        components = await health_cache.get()
        result = HealthResponse(status=overall(components), components=components)  # type: ignore[arg-type]
        if result.status != "ok":
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return result

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus exposition of the API's own metrics."""
        return Response(generate_latest(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(sentiment_router,  # GET /sentiment: the dashboards' series for notebooks
                       dependencies=[Depends(sentiment_rate)],
                       responses={429: {"description": "Per-client rate limit exceeded (see Retry-After)"}})
    app.add_middleware(BodySizeLimit, max_bytes=deps.settings.max_body_bytes)
    # outermost (added last): it also counts the 413s BodySizeLimit answers before routing (route "unmatched")
    app.add_middleware(RequestMetrics, metrics=deps.metrics)
    app.state.deps = deps
    app.state.health = health_cache
    return app
