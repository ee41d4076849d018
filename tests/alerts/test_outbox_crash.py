"""Crash-safety of delivery with a real ``marketmood alerts run`` subprocess, real PostgreSQL and real local
receivers: SIGKILL the service while a notifier hangs on the 2nd of 5 pending notifications, restart it,
and check that Slack and email got each notification at most once while PagerDuty and webhook retries carry
the same dedup / idempotency key. Then the operator path: ``outbox --dead`` lists what needs a human and
``redrive`` re-queues it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from alerts import lifecycle
from alerts.rules import parse_rules
from marketmood.cli import cli
from marketmood.settings import get_settings
from storage import alerts as db
from storage.db import make_engine
from tests.alerts.conftest import wait_for
from tests.alerts.factories import BASE

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "crash-secret-0123456789"
# Outbox order (= send order): the 2nd row is the one whose receiver hangs.
ORDER = {"slack": ["slack-a", "slack-b", "hook", "pd", "mail"], "webhook": ["slack-a", "hook", "slack-b", "pd", "mail"]}


def _rules(tmp_path: Path, http_recorder, smtp_recorder) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({
        "notifiers": {
            "slack-a": {"type": "slack", "url": http_recorder.url("/slack-a")},
            "slack-b": {"type": "slack", "url": http_recorder.url("/slack-b")},
            "hook": {"type": "webhook", "url": http_recorder.url("/hook"), "secret": SECRET},
            "pd": {"type": "pagerduty", "routing_key": "rk", "events_url": http_recorder.url("/pd")},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp_recorder.port, "from": "mm@example.com",
                     "to": ["oncall@example.com"], "attach_plot": False},
        },
        "routing": {"critical": ["slack-a", "slack-b", "hook", "pd", "mail"]},
        "rules": [{"name": "spike", "scope": {"type": "topic", "include": ["Macro"]}, "severity": "critical"}],
    }))
    return path


def _env(db_url: str, rules: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env.update({
        "MARKETMOOD_DATABASE_URL": db_url, "MARKETMOOD_HOME": str(home), "MARKETMOOD_ALERTS__RULES_PATH": str(rules),
        "MARKETMOOD_ALERTS__OUTBOX_POLL_INTERVAL_S": "0.2", "MARKETMOOD_ALERTS__EVALUATE_INTERVAL_S": "60",
        "MARKETMOOD_ALERTS__DELIVERY_TIMEOUT_S": "1.5", "MARKETMOOD_ALERTS__CLAIM_TIMEOUT_S": "3",
        "MARKETMOOD_ALERTS__RETRY_BASE_S": "0.2", "MARKETMOOD_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
    })
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marketmood.cli", "alerts", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _cli_here(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *args: str):
    """The same CLI in this process (a subprocess start costs seconds on a loaded CI machine)."""
    for k, v in env.items():
        if k.startswith("MARKETMOOD_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, ["alerts", *args])
    finally:
        get_settings.cache_clear()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hangs", ["slack", "webhook"])
def test_sigkill_mid_send_never_resends_slack_or_email(hangs, db_url, tmp_path, http_recorder, smtp_recorder,
                                                       monkeypatch) -> None:
    order = ORDER[hangs]
    engine = make_engine(db_url)
    with engine.begin() as conn:
        alert = db.insert_alert(conn, rule="spike", scope_type="topic", scope="Macro", severity="critical",
                                state="firing", dedup_key="marketmood/spike/topic/Macro/1", started_at=BASE,
                                evidence={"current_share": 0.6, "baseline_share": 0.2, "volume": 20})
        for name in order:  # one row each, in this id order
            lifecycle.enqueue(conn, alert, [name], "trigger")
    http_recorder.block_on = 2
    env = _env(db_url, _rules(tmp_path, http_recorder, smtp_recorder), tmp_path / "home")
    log = open(tmp_path / "service.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "marketmood.cli", "alerts", "run", "--metrics-port", "0"],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert http_recorder.blocked.wait(60), (tmp_path / "service.log").read_text()
        os.killpg(proc.pid, signal.SIGKILL)  # mid-send: the 2nd request is on the wire, unanswered
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    with engine.connect() as conn:
        status = {r["notifier"]: r["status"] for r in db.list_outbox(conn, alert_id=alert["id"])}
    assert status[order[0]] == "delivered" and status[order[1]] == "sending", status
    assert all(status[n] == "pending" for n in order[2:]), status

    # Restart once the dead sender's claim is stale (claim_timeout_s = 3); the same code as the loop.
    time.sleep(3.2)
    done = _cli(env, "run", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_for(lambda: len(smtp_recorder.messages) >= 1, 10)

    paths = Counter(r.path for r in http_recorder.requests)
    assert paths["/slack-a"] == 1 and paths["/slack-b"] == 1 and paths["/pd"] == 1  # at most once; pd after restart
    assert len(smtp_recorder.messages) == 1
    hooks = [r for r in http_recorder.requests if r.path == "/hook"]
    with engine.connect() as conn:
        rows = {r["notifier"]: r for r in db.list_outbox(conn, alert_id=alert["id"])}
    if hangs == "slack":  # interrupted Slack send: maybe delivered, so parked as unknown, never re-sent
        assert rows["slack-b"]["status"] == "unknown" and len(hooks) == 1
        parked = rows["slack-b"]
    else:  # interrupted webhook send: re-sent, with the same idempotency key as the interrupted attempt
        assert rows["hook"]["status"] == "delivered" and rows["hook"]["attempts"] == 2
        assert len(hooks) == 2 and hooks[0].headers["Idempotency-Key"] == hooks[1].headers["Idempotency-Key"] \
            == f"{alert['dedup_key']}:trigger"
        assert rows["slack-b"]["status"] == "delivered"
        parked = None
    assert Counter(r["status"] for r in rows.values())["delivered"] == (4 if parked else 5)

    # The operator's view and the re-drive (only on request: it may send a copy).
    listed = _cli_here(env, monkeypatch, "outbox", "--dead", "--json")
    assert listed.exit_code == 0, listed.output
    dead = json.loads(listed.output)
    assert [r["id"] for r in dead] == ([parked["id"]] if parked else [])
    if parked:
        assert "sender stopped during the send" in dead[0]["last_error"]
        assert _cli_here(env, monkeypatch, "redrive", str(parked["id"])).exit_code == 0
        assert _cli_here(env, monkeypatch, "redrive", str(parked["id"])).exit_code == 1  # no longer dead
        assert _cli_here(env, monkeypatch, "run", "--once").exit_code == 0
        assert Counter(r.path for r in http_recorder.requests)["/slack-b"] == 2  # the operator asked for it
    engine.dispose()


GROUP_TOPICS = ("Energy | Oil", "Macro", "Markets")


@pytest.mark.timeout(120)
def test_sigkill_mid_grouped_send_never_resends_the_group_or_its_members(db_url, tmp_path, http_recorder,
                                                                          smtp_recorder) -> None:
    """Three alerts of one rule fired in one pass ride one Slack message and one webhook delivery. SIGKILL
    while the grouped Slack message is on the wire: after a restart neither the group nor any member is
    posted again (Slack cannot de-duplicate), and the webhook group goes out exactly once."""
    rules_path = tmp_path / "rules.yaml"
    rules_data = {
        "notifiers": {"slack-a": {"type": "slack", "url": http_recorder.url("/slack-a")},
                      "hook": {"type": "webhook", "url": http_recorder.url("/hook"), "secret": SECRET}},
        "routing": {"critical": ["slack-a", "hook"]},
        "rules": [{"name": "spike", "scope": {"type": "topic", "include": list(GROUP_TOPICS)}, "severity": "critical"}],
    }
    rules_path.write_text(yaml.safe_dump(rules_data))
    rules = parse_rules(rules_data)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        alerts = [db.insert_alert(conn, rule="spike", scope_type="topic", scope=topic, severity="critical",
                                  state="firing", dedup_key=f"marketmood/spike/topic/{topic}/1", started_at=BASE,
                                  evidence={"current_share": 0.6, "baseline_share": 0.2, "volume": 20},
                                  group_key="spike/critical/1")
                  for topic in GROUP_TOPICS]
        for alert in alerts:
            lifecycle.enqueue(conn, alert, ["slack-a", "hook"], "trigger")
        assert lifecycle.group_notifications(conn, rules, rules.rules[0], alerts, "trigger") == 4
    http_recorder.block_on = 1  # the first send, the grouped Slack message, hangs
    env = _env(db_url, rules_path, tmp_path / "home")
    log = open(tmp_path / "service.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "marketmood.cli", "alerts", "run", "--metrics-port", "0"],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert http_recorder.blocked.wait(60), (tmp_path / "service.log").read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    time.sleep(3.2)  # the dead sender's claim goes stale
    done = _cli(env, "run", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_for(lambda: any(r.path == "/hook" for r in http_recorder.requests), 10)

    slack = [r for r in http_recorder.requests if r.path == "/slack-a"]
    assert len(slack) == 1, "the grouped Slack message (or a member of it) was posted again after the restart"
    assert all(topic.replace("&", "&amp;") in str(slack[0].json()) for topic in GROUP_TOPICS)
    hooks = [r.json() for r in http_recorder.requests if r.path == "/hook"]
    assert len(hooks) == 1 and hooks[0]["group"]["size"] == 3
    with engine.connect() as conn:
        rows = [r for a in alerts for r in db.list_outbox(conn, alert_id=a["id"])]
    by = Counter((r["notifier"], r["status"]) for r in rows)
    assert by == {("slack-a", "unknown"): 1, ("slack-a", "grouped"): 2, ("hook", "delivered"): 1,
                  ("hook", "grouped"): 2}, by
    engine.dispose()
