"""What every notifier implements, and how failures are classified for the outbox's retry policy."""

from __future__ import annotations

from typing import Any, Protocol

import httpx


class DeliveryError(RuntimeError):
    """A failed attempt; ``retryable=False`` (e.g. HTTP 400/403) marks the notification dead at once.

    ``maybe_delivered``: the request went out and the answer was lost (a read timeout, a dropped connection):
    the receiver may have it. Channels that de-duplicate retry it; the others must not (at most once)."""

    def __init__(self, message: str, *, retryable: bool = True, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.maybe_delivered = maybe_delivered


class Notifier(Protocol):
    name: str
    kind: str

    def send(self, payload: dict[str, Any]) -> None:
        """Deliver one notification or raise DeliveryError."""
        ...


def post_json(client: httpx.Client, url: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST and classify the outcome: 2xx ok, 408/429/5xx/network retryable, other 4xx permanent."""
    try:
        response = client.post(url, content=content, headers={"Content-Type": "application/json", **headers})
    except httpx.HTTPError as exc:
        # sent, answer lost: a read timeout or a connection the server dropped before answering (a connect
        # or write failure means the receiver never got a whole request)
        sent = isinstance(exc, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError))
        raise DeliveryError(f"{type(exc).__name__}: {exc}", maybe_delivered=sent) from exc
    if response.is_success:
        return response
    retryable = response.status_code in (408, 425, 429) or response.status_code >= 500
    raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}", retryable=retryable)
