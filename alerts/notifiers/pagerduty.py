"""PagerDuty Events API v2: trigger, acknowledge and resolve share the alert's dedup_key."""

from __future__ import annotations

import json
from typing import Any

import httpx

from alerts.notifiers.base import post_json

_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


def _http(url: object) -> bool:
    """Only plain web links reach the incident (no javascript:, data: ... from an untrusted feed)."""
    return isinstance(url, str) and url.lower().startswith(("http://", "https://"))


def pagerduty_event(payload: dict[str, Any], routing_key: str, source: str = "marketmood") -> dict[str, Any]:
    """The Events API v2 body for a generic payload (pure; tested directly)."""
    alert = payload["alert"]
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": payload["event"],  # trigger | acknowledge | resolve
        "dedup_key": alert["dedup_key"],
    }
    if payload["event"] == "trigger":
        ev = alert.get("evidence") or {}
        body["payload"] = {
            "summary": payload["summary"][:1024],
            "source": source,
            "severity": _SEVERITY.get(alert["severity"], "warning"),
            "timestamp": alert.get("started_at"),
            "component": alert["scope"],
            "group": alert["scope_type"],
            "class": alert["rule"],
            "custom_details": {**{k: v for k, v in ev.items() if k != "series"}, "group_key": alert.get("group_key")},
        }
        links = ev.get("links") or {}
        body["links"] = [{"href": links[k], "text": label} for k, label in (("runbook", "Runbook"),
                         ("grafana", "Grafana panel")) if _http(links.get(k))]
        body["links"] += [{"href": h["url"], "text": str(h.get("title", ""))[:200]}
                          for h in ev.get("headlines", [])[:5] if _http(h.get("url"))]
    return body


class PagerDutyNotifier:
    kind = "pagerduty"

    def __init__(self, name: str, routing_key: str, events_url: str, source: str = "marketmood",
                 timeout_s: float = 5.0) -> None:
        self.name, self.events_url, self.source = name, events_url, source
        self._routing_key = routing_key
        self._client = httpx.Client(timeout=timeout_s)

    def send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(pagerduty_event(payload, self._routing_key, self.source)).encode()
        post_json(self._client, self.events_url, content=body, headers={})
