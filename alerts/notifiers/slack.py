"""Slack incoming webhook: a short text plus blocks with the evidence and top negative headlines."""

from __future__ import annotations

import json
from typing import Any

import httpx

from alerts.notifiers.base import post_json

_EMOJI = {"trigger": ":rotating_light:", "acknowledge": ":eyes:", "resolve": ":white_check_mark:"}


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """The Slack message body for a generic payload (pure; tested directly)."""
    event = payload["event"]
    alert = payload["alert"]
    ev = alert.get("evidence") or {}
    text = f"{_EMOJI.get(event, '')} {payload['summary']}".strip()
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
    if event == "trigger":
        fields = [
            f"*Scope*\n{alert['scope_type']}: {alert['scope']}",
            f"*Severity*\n{alert['severity']}",
            f"*Negative share*\n{ev.get('current_share')} vs {ev.get('baseline_share')} baseline",
            f"*Volume*\n{ev.get('volume')} articles (p={ev.get('p_value')})",
        ]
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
        lines = []
        for h in ev.get("headlines", [])[:5]:
            title = str(h.get("title", "")).replace("|", "/")
            link = f"<{h['url']}|{title}>" if h.get("url") else title
            lines.append(f"• {link} (score {h.get('score')})")
        if lines:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"alert #{alert['id']} · rule {alert['rule']} · `marketmood alerts ack {alert['id']}`"}
    ]})
    return {"text": text, "blocks": blocks}


class SlackNotifier:
    kind = "slack"

    def __init__(self, name: str, url: str, timeout_s: float = 5.0) -> None:
        self.name, self.url = name, url
        self._client = httpx.Client(timeout=timeout_s)

    def send(self, payload: dict[str, Any]) -> None:
        post_json(self._client, self.url, content=json.dumps(slack_message(payload)).encode(), headers={})
