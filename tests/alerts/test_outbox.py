"""OutboxSender on real PostgreSQL: a notifier bug on one row must not undo the rows already sent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from alerts import lifecycle
from alerts.outbox import OutboxSender
from storage import alerts as db
from tests.alerts.factories import BASE


class Recording:
    def __init__(self, name: str, fail: Exception | None = None) -> None:
        self.name, self.kind, self.fail, self.sent = name, "test", fail, []

    def send(self, payload: dict) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(payload)


def test_unexpected_notifier_error_does_not_resend_delivered_rows(engine) -> None:
    with engine.begin() as conn:
        alert = db.insert_alert(conn, rule="r", scope_type="topic", scope="Macro", severity="critical",
                                state="firing", dedup_key="k-outbox", started_at=BASE, evidence={})
        lifecycle.enqueue(conn, alert, ["a-good", "b-buggy"], "trigger")
    good, buggy = Recording("a-good"), Recording("b-buggy", KeyError("summary"))
    sender = OutboxSender(engine, {"a-good": good, "b-buggy": buggy}, base_s=1, max_s=8)
    now = datetime.now(timezone.utc) + timedelta(seconds=1)  # rows are due from their insert time
    report = sender.deliver_due(now)  # before the fix: KeyError escaped and rolled back a-good's delivery
    assert [k[1] for k in report.delivered] == ["a-good"]
    assert [k[1] for k in report.dead] == ["b-buggy"]  # a bug, not an outage: it would fail the same way forever
    sender.deliver_due(now + timedelta(minutes=5))
    assert len(good.sent) == 1  # delivered exactly once
    with engine.connect() as conn:
        rows = {r["notifier"]: r for r in db.list_outbox(conn, alert_id=alert["id"])}
    assert rows["a-good"]["status"] == "delivered"
    assert rows["b-buggy"]["status"] == "dead" and rows["b-buggy"]["attempts"] == 1
    assert "KeyError" in rows["b-buggy"]["last_error"]



def test_rows_of_a_notifier_no_longer_configured_go_dead_naming_it(engine) -> None:
    """A notifier removed from the rules file: before, its rows retried "not configured" for ever (pending in
    the outbox gauge, never dead) and its trigger held the resolve behind it. Past the grace (which spares a
    rolling deploy that adds a notifier) every pending row of it goes dead, with the notifier named, as a warning."""
    from structlog.testing import capture_logs

    with engine.begin() as conn:
        alert = db.insert_alert(conn, rule="r", scope_type="topic", scope="Macro", severity="critical",
                                state="firing", dedup_key="k-removed", started_at=BASE, evidence={})
        lifecycle.enqueue(conn, alert, ["hook", "old-slack"], "trigger")
        lifecycle.enqueue(conn, alert, ["hook", "old-slack"], "resolve")
    hook = Recording("hook")
    sender = OutboxSender(engine, {"hook": hook}, base_s=1, max_s=8)  # default grace: 10 minutes
    now = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert sender.deliver_due(now).dead == []  # within the grace: retried, another replica may have it
    dead: list[tuple[int, str, str]] = []
    with capture_logs() as logs:
        for minutes in (20, 60, 180):
            dead += sender.deliver_due(now + timedelta(minutes=minutes)).dead
    assert sorted(dead) == [(alert["id"], "old-slack", "resolve"), (alert["id"], "old-slack", "trigger")]
    assert [p["event"] for p in hook.sent] == ["trigger", "resolve"]  # the configured notifier is unaffected
    with engine.connect() as conn:
        rows = [r for r in db.list_outbox(conn, alert_id=alert["id"]) if r["notifier"] == "old-slack"]
        counts = db.outbox_counts(conn)
    assert [r["status"] for r in rows] == ["dead", "dead"]
    assert all("'old-slack' is not configured" in r["last_error"] for r in rows)
    assert counts[("old-slack", "dead")] == 2 and ("old-slack", "pending") not in counts
    warnings = [e for e in logs if e["event"] == "notification_dead" and e["log_level"] == "warning"]
    assert sorted(e["notification_event"] for e in warnings) == ["resolve", "trigger"]
    assert all(e["notifier"] == "old-slack" and "old-slack" in e["error"] for e in warnings)

class FailsOn(Recording):
    """Raises ``fail`` for one alert's rows only (a message that cannot be built), sends the others."""

    def __init__(self, name: str, alert_id: int, fail: Exception) -> None:
        super().__init__(name)
        self.alert_id, self.error = alert_id, fail

    def send(self, payload: dict) -> None:
        if payload["alert"]["id"] == self.alert_id:
            raise self.error
        self.sent.append(payload)


def test_a_row_that_can_never_be_sent_does_not_hold_the_notifiers_queue(engine) -> None:
    """Before: the bad row was retried forever and, being the oldest due row, was claimed first on every pass,
    so no later alert ever reached that notifier."""
    with engine.begin() as conn:
        bad = db.insert_alert(conn, rule="r", scope_type="ticker", scope="BRK", severity="critical",
                              state="firing", dedup_key="k-bad", started_at=BASE, evidence={})
        good = db.insert_alert(conn, rule="r", scope_type="ticker", scope="MSFT", severity="critical",
                               state="firing", dedup_key="k-good", started_at=BASE, evidence={})
        lifecycle.enqueue(conn, bad, ["mail"], "trigger")
        lifecycle.enqueue(conn, good, ["mail"], "trigger")
    mail = FailsOn("mail", bad["id"], ValueError("Header values may not contain linefeed"))
    sender = OutboxSender(engine, {"mail": mail}, base_s=60, max_s=3600)
    now = datetime.now(timezone.utc) + timedelta(seconds=1)
    for hours in range(5):
        sender.deliver_due(now + timedelta(hours=hours))
    assert [p["alert"]["id"] for p in mail.sent] == [good["id"]]


def test_permanent_4xx_goes_dead_and_is_redriven(engine, http_recorder) -> None:
    from alerts.notifiers.slack import SlackNotifier

    with engine.begin() as conn:
        alert = db.insert_alert(conn, rule="r", scope_type="topic", scope="Macro", severity="critical",
                                state="firing", dedup_key="k-dead", started_at=BASE, evidence={})
        lifecycle.enqueue(conn, alert, ["slack"], "trigger")
        lifecycle.enqueue(conn, alert, ["slack"], "resolve")
    sender = OutboxSender(engine, {"slack": SlackNotifier("slack", http_recorder.url("/s"))}, base_s=1, max_s=8)
    http_recorder.status = 403  # e.g. a revoked webhook: retrying can never succeed
    now = datetime.now(timezone.utc) + timedelta(seconds=1)
    report = sender.deliver_due(now)
    assert [k[1:] for k in report.dead] == [("slack", "trigger")] and http_recorder.attempts == 1
    assert sender.deliver_due(now + timedelta(hours=1)).dead == []  # dead is never retried by itself...
    with engine.connect() as conn:
        dead = db.list_outbox(conn, statuses=("dead", "unknown"))
    assert [(r["event"], r["status"], "HTTP 403" in r["last_error"]) for r in dead] == [("trigger", "dead", True)]
    http_recorder.status = 200  # the operator fixed the webhook URL / token
    with engine.begin() as conn:
        assert [r["id"] for r in db.redrive(conn, outbox_ids=(dead[0]["id"],))] == [dead[0]["id"]]
    sender.deliver_due(now + timedelta(hours=1))
    sender.deliver_due(now + timedelta(hours=1))
    assert ["RESOLVED" in r.json()["text"] for r in http_recorder.requests] == [False, True]  # trigger first


@pytest.mark.parametrize(("kind", "copies", "status"), [("slack", 1, "unknown"), ("webhook", 2, "delivered")])
def test_a_send_that_went_out_unanswered_is_repeated_only_where_the_receiver_drops_copies(
        engine, http_recorder, kind, copies, status) -> None:
    """The receiver got the request and never answered (read timeout). Before, Slack and email retried it like
    a refused connection, and on-call got the message twice; a webhook carries an idempotency key, so it may."""
    from alerts.notifiers.slack import SlackNotifier
    from alerts.notifiers.webhook import WebhookNotifier

    with engine.begin() as conn:
        alert = db.insert_alert(conn, rule="r", scope_type="topic", scope="Macro", severity="critical",
                                state="firing", dedup_key=f"k-timeout-{kind}", started_at=BASE, evidence={})
        lifecycle.enqueue(conn, alert, [kind], "trigger")
    notifier = (SlackNotifier(kind, http_recorder.url("/n"), timeout_s=0.5) if kind == "slack"
                else WebhookNotifier(kind, http_recorder.url("/n"), "s3cret-s3cret-s3cret", timeout_s=0.5))
    http_recorder.block_on = 1  # the first request arrives and gets no answer
    sender = OutboxSender(engine, {kind: notifier}, base_s=1, max_s=8)
    now = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert len(sender.deliver_due(now).failed) == 1
    http_recorder.release.set()
    for minutes in range(1, 4):
        sender.deliver_due(now + timedelta(minutes=minutes))
    assert len(http_recorder.requests) == copies
    with engine.connect() as conn:
        [row] = db.list_outbox(conn, alert_id=alert["id"])
    assert row["status"] == status


def test_a_stop_ends_delivery_between_sends_not_after_the_backlog(engine) -> None:
    """A restart during a backlog: before, the pass went on through every due row until the process was killed,
    possibly mid-send (a Slack or e-mail row then ends `unknown`). Now the pass stops after the send under way."""
    import threading

    with engine.begin() as conn:
        for i in range(3):
            alert = db.insert_alert(conn, rule="r", scope_type="ticker", scope=f"S{i}", severity="critical",
                                    state="firing", dedup_key=f"k-stop-{i}", started_at=BASE, evidence={})
            lifecycle.enqueue(conn, alert, ["n"], "trigger")
    stop = threading.Event()

    class StopsAfterFirst(Recording):
        def send(self, payload: dict) -> None:
            super().send(payload)
            stop.set()  # the shutdown arrives while this send is under way

    notifier = StopsAfterFirst("n")
    report = OutboxSender(engine, {"n": notifier}).deliver_due(datetime.now(timezone.utc) + timedelta(seconds=1),
                                                                stop=stop.is_set)
    assert len(report.delivered) == len(notifier.sent) == 1
    with engine.connect() as conn:
        assert sorted(r["status"] for r in db.list_outbox(conn)) == ["delivered", "pending", "pending"]


class _TricklingServer:
    """Accepts, reads the request, then answers one byte every 0.3 s for ``seconds`` (a broken proxy, a tarpit):
    every read returns within any per-read timeout, so only a deadline on the whole send ends it."""

    def __init__(self, seconds: float = 20.0) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.seconds = seconds
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import time

        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            end = time.monotonic() + self.seconds
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while time.monotonic() < end:
                    conn.sendall(b"a")
                    time.sleep(0.3)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_a_receiver_that_trickles_its_answer_does_not_hold_the_other_notifiers(engine, http_recorder) -> None:
    """The notifiers' timeouts bound each read, not the whole send: a Slack endpoint answering a byte at a time
    held the one delivery thread (and PagerDuty and every other notifier behind it) for as long as it kept
    trickling, past the row's claim. Now the send is given up at the sender's deadline (inside the claim): the
    Slack row may have arrived, so it is parked ``unknown``, and the next row goes out in the same pass."""
    import time

    from alerts.notifiers.slack import SlackNotifier
    from alerts.notifiers.webhook import WebhookNotifier

    slow = _TricklingServer(seconds=20)
    try:
        with engine.begin() as conn:
            alert = db.insert_alert(conn, rule="r", scope_type="topic", scope="Macro", severity="critical",
                                    state="firing", dedup_key="k-trickle", started_at=BASE, evidence={})
            lifecycle.enqueue(conn, alert, ["a-slack"], "trigger")
            lifecycle.enqueue(conn, alert, ["b-hook"], "trigger")
        notifiers = {"a-slack": SlackNotifier("a-slack", f"http://127.0.0.1:{slow.port}/s", timeout_s=1),
                     "b-hook": WebhookNotifier("b-hook", http_recorder.url("/hook"), "s3cret-s3cret-s3cret",
                                               timeout_s=1)}
        sender = OutboxSender(engine, notifiers, base_s=1, max_s=8, claim_timeout_s=3)
        started = time.monotonic()
        report = sender.deliver_due(datetime.now(timezone.utc) + timedelta(seconds=1))
        took = time.monotonic() - started
        assert took < 8, f"one trickling receiver held delivery for {took:.0f}s"
        assert [k[1] for k in report.delivered] == ["b-hook"] and len(http_recorder.requests) == 1
        with engine.connect() as conn:
            rows = {r["notifier"]: r for r in db.list_outbox(conn, alert_id=alert["id"])}
        assert rows["a-slack"]["status"] == "unknown" and "deadline" in rows["a-slack"]["last_error"]
    finally:
        slow.close()
