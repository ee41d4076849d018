"""Slack incoming webhook: a short text plus blocks with the evidence and top negative headlines."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import httpx

from alerts.notifiers.base import post_json

_EMOJI = {"trigger": ":rotating_light:", "acknowledge": ":eyes:", "resolve": ":white_check_mark:"}
_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)


def escape(value: object) -> str:
    """Untrusted text (headlines, scopes, anything from a publisher) made inert in Slack mrkdwn.

    Slack's control sequences all start with ``<`` (``<!channel>``, ``<@U123>``, ``<http://x|fake>``), so
    ``& < >`` are entity-escaped as Slack documents; a bare ``@channel`` gets a zero-width space so it can
    never become a broadcast even where ``link_names`` is on."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub(lambda m: "@\u200b" + m.group(1), text)


def safe_url(url: object) -> str | None:
    """A URL fit for ``<url|label>``: http(s) only, with none of the characters that end or split a link."""
    if not isinstance(url, str) or any(c in url for c in "<>| \t\r\n"):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return url.replace("&", "&amp;")


def _link(url: object, label: object) -> str:
    href = safe_url(url)
    return f"<{href}|{escape(label)}>" if href else escape(label)


def _member_line(member: dict[str, Any], event: str) -> str:
    """One alert of a group: scope, evidence, its top headline and its Grafana panel."""
    alert = member["alert"]
    ev = alert.get("evidence") or {}
    line = f"• *{escape(alert['scope'])}* (alert #{escape(alert['id'])})"
    if event == "trigger":
        line += (f": {escape(ev.get('current_share'))} negative vs {escape(ev.get('baseline_share'))} baseline, "
                 f"{escape(ev.get('volume'))} articles, p={escape(ev.get('p_value'))}")
        top = (ev.get("headlines") or [])[:1]
        if top:
            line += f"\n    {_link(top[0].get('url'), top[0].get('title', ''))}"
    grafana = (ev.get("links") or {}).get("grafana")
    if safe_url(grafana):
        line += f" · {_link(grafana, 'Grafana panel')}"
    return line


def _group_message(payload: dict[str, Any]) -> dict[str, Any]:
    event = payload["event"]
    alert = payload["alert"]
    text = f"{_EMOJI.get(event, '')} {escape(payload['summary'])}".strip()
    members = payload["alerts"]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
    for start in range(0, len(members), 10):  # Slack caps a section's text at 3,000 characters
        lines = [_member_line(m, event) for m in members[start:start + 10]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}})
    runbook = ((alert.get("evidence") or {}).get("links") or {}).get("runbook")
    ids = " ".join(escape(m["alert"]["id"]) for m in members)
    context = f"{len(members)} alerts · rule {escape(alert['rule'])} · `marketmood alerts ack <id>` for {ids}"
    refs = [_link(runbook, "Runbook")] if safe_url(runbook) else []
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join([context, *refs])}]})
    return {"text": text, "blocks": blocks[:50]}  # Slack: at most 50 blocks per message


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """The Slack message body for a generic payload, one alert or a group (pure; tested directly)."""
    if payload.get("alerts"):
        return _group_message(payload)
    event = payload["event"]
    alert = payload["alert"]
    ev = alert.get("evidence") or {}
    text = f"{_EMOJI.get(event, '')} {escape(payload['summary'])}".strip()
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
    if event == "trigger":
        fields = [
            f"*Scope*\n{escape(alert['scope_type'])}: {escape(alert['scope'])}",
            f"*Severity*\n{escape(alert['severity'])}",
            f"*Negative share*\n{escape(ev.get('current_share'))} vs {escape(ev.get('baseline_share'))} baseline",
            f"*Volume*\n{escape(ev.get('volume'))} articles (p={escape(ev.get('p_value'))})",
        ]
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
        lines = [f"• {_link(h.get('url'), h.get('title', ''))} (score {escape(h.get('score'))})"
                 for h in ev.get("headlines", [])[:5]]
        if lines:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    links = ev.get("links") or {}
    refs = [_link(links.get(k), label) for k, label in (("runbook", "Runbook"), ("grafana", "Grafana panel"))
            if safe_url(links.get(k))]
    context = f"alert #{escape(alert['id'])} · rule {escape(alert['rule'])} · `marketmood alerts ack {escape(alert['id'])}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join([context, *refs])}]})
    return {"text": text, "blocks": blocks}


class SlackNotifier:
    kind = "slack"

    def __init__(self, name: str, url: str, timeout_s: float = 5.0) -> None:
        self.name, self.url = name, url
        self._client = httpx.Client(timeout=timeout_s)

    def send(self, payload: dict[str, Any]) -> None:
        post_json(self._client, self.url, content=json.dumps(slack_message(payload)).encode(), headers={})
