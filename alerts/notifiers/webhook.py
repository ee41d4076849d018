"""Generic JSON webhook, signed with HMAC-SHA256 so receivers can trust and de-duplicate it.

Headers: ``X-MarketMood-Timestamp`` (Unix seconds), ``X-MarketMood-Signature: sha256=<hex>`` where the MAC
is over ``<timestamp>.<raw body>`` (binding the time prevents replays), ``X-MarketMood-Event`` and
``Idempotency-Key`` (stable per alert, event and reminder number: delivery is at-least-once, a retry carries
the same key). Every body is bounded (``webhook_body``): many receivers refuse a body over 1 MB.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from typing import Any
from urllib.parse import quote

import httpx

from alerts.notifiers.base import post_json
from alerts.payloads import delivery_key, trimmed_evidence


#: Members of a group sent in one body: a sell-off under a per-ticker rule groups hundreds of alerts, each with
#: its evidence and headlines, into a body of several MB that receivers refuse (413: dead, holding the resolve).
MAX_GROUP_MEMBERS = 50
#: Hard cap on a body (under the common 1 MB limit): a group's members are dropped from the end until it fits,
#: as 50 members with many long headlines each can still exceed it; a lead alert too big alone is trimmed.
MAX_BODY_BYTES = 900_000

#: Printable ASCII passes unchanged, so an ASCII key is sent exactly as before (receivers keep de-duplicating).
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F))


def idempotency_key(payload: dict[str, Any]) -> str:
    """The delivery key as an HTTP header value: headers are ASCII, and the key holds the scope (a ticker from a
    feed may be "ÄPFEL"), so anything else is percent-encoded (UTF-8); deterministic, so a retry repeats it."""
    return quote(delivery_key(payload), safe=_HEADER_SAFE)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify(secret: str, timestamp: str, body: bytes, header: str, *, max_age_s: float = 300.0) -> bool:
    """Receiver-side check (also used by tests): constant-time compare and a freshness window."""
    try:
        sent_at = float(timestamp)
    except (TypeError, ValueError):  # a missing or forged timestamp header: not a valid request
        return False
    if not math.isfinite(sent_at) or abs(time.time() - sent_at) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def _cut_group(payload: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    """The payload carrying only ``members`` (the first ones); ``group.omitted`` counts the rest."""
    omitted = payload["group"]["size"] - len(members)
    return {**payload, "alerts": members, "group": {**payload["group"], "omitted": omitted}}


def _bounded(payload: dict[str, Any]) -> tuple[bytes, bool]:
    """The body with as many group members as fit, and whether it is whole enough to send: within the bound
    and, for a group, carrying at least its lead member."""
    if not payload.get("alerts") or not payload.get("group"):
        body = _encode(payload)
        return body, len(body) <= MAX_BODY_BYTES
    members = payload["alerts"][:MAX_GROUP_MEMBERS]
    room = MAX_BODY_BYTES - len(_encode(_cut_group(payload, [])))  # ``omitted`` only gets shorter from here
    kept = 0
    for member in members:
        room -= len(_encode(member)) + 1  # its JSON and a comma
        if room < 0:
            break
        kept += 1
    body = _encode(_cut_group(payload, members[:kept]))
    return body, kept > 0 and len(body) <= MAX_BODY_BYTES


def _with_lead_evidence(payload: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
    """``payload`` whose lead alert carries ``evidence``: in ``alert`` and, for a group, in its first member
    (the same alert; a group's other members keep theirs, and are left out whole when they do not fit)."""
    lead = payload["alert"]
    out = {**payload, "alert": {**lead, "evidence": evidence}}
    alerts = payload.get("alerts")
    if alerts and isinstance(alerts[0].get("alert"), dict) and alerts[0]["alert"].get("dedup_key") == lead.get(
            "dedup_key"):
        out["alerts"] = [{**alerts[0], "alert": {**alerts[0]["alert"], "evidence": evidence}}, *alerts[1:]]
    return out


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The JSON body for a generic payload (pure; tested directly): the payload itself, except that a group
    carries at most MAX_GROUP_MEMBERS members and MAX_BODY_BYTES bytes; ``group.size`` keeps the full count,
    ``group.omitted`` says how many members were left out (0 when none), the summary still names the scopes.

    When the lead alert alone does not fit (its evidence: 50 long headlines, an escalation history, an embedded
    plot), its evidence is trimmed (``payloads.trimmed_evidence``, which says what it cut in
    ``evidence.trimmed``) until it does: a receiver refuses an oversized body, and the page must still go out."""
    body, whole = _bounded(payload)
    if whole or not isinstance(payload.get("alert"), dict):
        return body
    for evidence in trimmed_evidence(payload["alert"].get("evidence")):
        body, whole = _bounded(_with_lead_evidence(payload, evidence))
        if whole:
            return body
    return body  # only the alert's own fields (scope, keys) are left: nothing more to trim without losing it


class WebhookNotifier:
    kind = "webhook"

    def __init__(self, name: str, url: str, secret: str, headers: dict[str, str] | None = None,
                 timeout_s: float = 5.0) -> None:
        self.name, self.url, self._secret = name, url, secret
        self._headers = dict(headers or {})
        self._client = httpx.Client(timeout=timeout_s)

    def send(self, payload: dict[str, Any]) -> None:
        body = webhook_body(payload)
        ts = str(int(time.time()))
        headers = {
            **self._headers,
            "X-MarketMood-Timestamp": ts,
            "X-MarketMood-Signature": sign(self._secret, ts, body),
            "X-MarketMood-Event": str(payload.get("event")),
            "Idempotency-Key": idempotency_key(payload),
        }
        post_json(self._client, self.url, content=body, headers=headers)
