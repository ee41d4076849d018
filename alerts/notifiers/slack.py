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


#: Slack refuses a message whose section text is longer (HTTP 400 ``invalid_blocks``): permanent, so the
#: trigger would go dead and hold the alert's resolve behind it.
SECTION_LIMIT = 3000
_MAX_LABEL, _MAX_URL = 200, 1500  # a headline line stays well under SECTION_LIMIT even when escaped


def _link(url: object, label: object) -> str:
    """``<url|label>``, the label cut to 200 characters; a URL that is unsafe or too long shows the label alone."""
    text = str(label)
    text = text if len(text) <= _MAX_LABEL else text[:_MAX_LABEL - 1] + "…"
    href = safe_url(url)
    return f"<{href}|{escape(text)}>" if href and len(href) <= _MAX_URL else escape(text)


def _sections(lines: list[str]) -> list[dict[str, Any]]:
    """Section blocks holding ``lines`` in order, as many per section as fit in SECTION_LIMIT characters (a line
    is never split, so a link is never cut in half; one that alone is longer is cut)."""
    sections: list[list[str]] = []
    size = 0
    for line in lines:
        line = line[:SECTION_LIMIT]
        if sections and size + 1 + len(line) <= SECTION_LIMIT:
            sections[-1].append(line)
            size += 1 + len(line)
        else:
            sections.append([line])
            size = len(line)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}} for chunk in sections]


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
    blocks += _sections([_member_line(m, event) for m in members])
    runbook = ((alert.get("evidence") or {}).get("links") or {}).get("runbook")
    refs = [_link(runbook, "Runbook")] if safe_url(runbook) else []
    head = f"{len(members)} alerts · rule {escape(alert['rule'])} · `marketmood alerts ack <id>` for "
    # Slack refuses a text over SECTION_LIMIT (HTTP 400: the group's trigger would go dead): as many ids as fit,
    # then where to find the rest (a per-ticker rule can fire hundreds of alerts in one pass)
    room = SECTION_LIMIT - len(head) - sum(3 + len(r) for r in refs) - 80
    ids: list[str] = []
    for m in members:
        alert_id = escape(m["alert"]["id"])
        room -= len(alert_id) + 1
        if room < 0:
            break
        ids.append(alert_id)
    rest = len(members) - len(ids)
    context = head + " ".join(ids) + (
        f" and {rest} more (`marketmood alerts list --state open`)" if rest else "")
    # Slack takes at most 50 blocks: members past block 49 are cut (the ack hint above still names the first ids)
    blocks = blocks[:49]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join([context, *refs])}]})
    return {"text": text, "blocks": blocks}


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
        blocks += _sections(lines)
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
