"""``marketmood api``: the HTTP API (FastAPI + uvicorn)."""

from __future__ import annotations

import click

from marketmood.logs import configure_logging
from marketmood.settings import get_settings
from storage.db import DatabaseUnavailableError
from storage.embedded import EmbeddedPostgresError


@click.command("api")
@click.option("--host", help="Interface to bind [default: settings api.host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port [default: settings api.port, 8000].")
def api_command(host: str | None, port: int | None) -> None:
    """Serve POST /classify, GET /alerts, POST /alerts/{id}/ack, POST /feedback, GET /sentiment, GET /health,
    GET /metrics.

    OpenAPI at /docs and /openapi.json. Writes need `Authorization: Bearer <token>` with a token from
    MARKETMOOD_API__TOKENS (JSON list; entries `name:secret` record `name` as the author). POST /classify is
    rate-limited per client (MARKETMOOD_API__CLASSIFY_PER_MINUTE, __CLASSIFY_BURST). An external database
    must be migrated first (`marketmood db upgrade`); the embedded default is migrated here.
    """
    from marketmood.api.server import SchemaNotReadyError, serve  # lazy: FastAPI and the app cost ~0.9 s at CLI start-up

    from marketmood.api.auth import parse_tokens

    settings = get_settings()
    parse_tokens(settings.api.tokens)  # a clash is a one-line config error before anything starts
    configure_logging(settings.log_level, settings.log_format)
    try:
        serve(settings, host or settings.api.host, port or settings.api.port)
    except (SchemaNotReadyError, DatabaseUnavailableError, EmbeddedPostgresError) as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = [api_command]
