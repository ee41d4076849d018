"""Notifiers against real local HTTP and SMTP servers: payloads, HMAC signature, dedup keys, failures."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from alerts.notifiers.base import DeliveryError
from alerts.notifiers.email import EmailNotifier
from alerts.notifiers.pagerduty import PagerDutyNotifier
from alerts.notifiers.slack import SlackNotifier
from alerts.notifiers.webhook import WebhookNotifier, verify
from alerts.payloads import notification_payload

SECRET = "s3cret-s3cret-s3cret"


def sample_alert(**overrides: object) -> dict:
    alert = {
        "id": 42, "rule": "topic-negative-spike", "scope_type": "topic", "scope": "Energy | Oil",
        "severity": "critical", "state": "firing", "dedup_key": "marketmood/topic-negative-spike/topic/Energy | Oil/1700000000",
        "started_at": "2023-11-14T22:13:20+00:00", "acknowledged_at": None, "acknowledged_by": None, "resolved_at": None,
        "evidence": {
            "current_share": 0.61, "baseline_share": 0.2, "delta": 0.41, "volume": 18, "baseline_volume": 300,
            "p_value": 1.2e-05, "z": 4.8, "window_end": 1700000900,
            "headlines": [{"title": "Oil tanker explodes in Gulf", "url": "https://example.com/a1", "score": -0.93}],
            "series": [[1700000000 + i * 300, 2 if i < 30 else 10, 10] for i in range(36)],
        },
    }
    alert.update(overrides)
    return alert


def test_webhook_is_signed_with_hmac(http_recorder) -> None:
    payload = notification_payload(sample_alert(), "trigger")
    WebhookNotifier("hook", http_recorder.url("/hook"), SECRET).send(payload)
    [req] = http_recorder.requests
    assert req.path == "/hook"
    ts, sig = req.headers["X-MarketMood-Timestamp"], req.headers["X-MarketMood-Signature"]
    expected = "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + req.body, hashlib.sha256).hexdigest()
    assert sig == expected
    assert verify(SECRET, ts, req.body, sig)
    assert not verify("another-secret-value", ts, req.body, sig)
    assert not verify(SECRET, ts, req.body + b" ", sig)  # a tampered body fails
    for bad_ts in ("", "not-a-number", "nan", "inf"):  # a forged header is rejected, not a crash
        assert not verify(SECRET, bad_ts, req.body, sig)
    body = req.json()
    assert body["event"] == "trigger" and body["alert"]["id"] == 42
    assert body["alert"]["evidence"]["headlines"][0]["url"] == "https://example.com/a1"
    assert req.headers["Idempotency-Key"] == sample_alert()["dedup_key"] + ":trigger"
    assert req.headers["X-MarketMood-Event"] == "trigger"


def test_slack_message(http_recorder) -> None:
    SlackNotifier("slack", http_recorder.url("/services/T/B/X")).send(notification_payload(sample_alert(), "trigger"))
    [req] = http_recorder.requests
    msg = req.json()
    assert "Energy | Oil" in msg["text"] and "61% negative vs 20% baseline" in msg["text"]
    flat = str(msg["blocks"])
    assert "<https://example.com/a1|Oil tanker explodes in Gulf>" in flat
    assert "marketmood alerts ack 42" in flat


def test_slack_escapes_untrusted_text(http_recorder) -> None:
    """Headlines and tickers come from publishers: none of them may ping a channel or forge a link."""
    evil = sample_alert(scope_type="ticker", scope="<!here>", evidence={
        "current_share": 0.61, "baseline_share": 0.2, "volume": 18, "p_value": 1e-5,
        "headlines": [
            {"title": "<!channel> Oil crash <https://evil.example|see Reuters> @everyone & more", "url": None,
             "score": -0.9},
            {"title": "Real headline", "url": "https://news.example.com/x?a=1&b=2", "score": -0.8},
            {"title": "Bad link", "url": "https://evil.example|Reuters>", "score": -0.7},
            {"title": "Script", "url": "javascript:alert(1)", "score": -0.7},
        ],
        "links": {"runbook": "https://runbooks.example.com/neg-spike", "grafana": "javascript:alert(1)"},
    })
    SlackNotifier("slack", http_recorder.url("/s")).send(notification_payload(evil, "trigger"))
    msg = http_recorder.requests[0].json()
    flat = msg["text"] + str(msg["blocks"])
    for forbidden in ("<!channel>", "<!here>", "<https://evil.example|", "@everyone", "javascript:", "|Reuters>"):
        assert forbidden not in flat, forbidden
    assert "&lt;!channel&gt; Oil crash &lt;https://evil.example|see Reuters&gt;" in flat  # shown, inert
    assert "<https://news.example.com/x?a=1&amp;b=2|Real headline>" in flat  # real links still work
    assert "• Bad link" in flat and "• Script" in flat  # unsafe URL: the title, without a link
    assert "<https://runbooks.example.com/neg-spike|Runbook>" in flat and "Grafana panel" not in flat
    # Every '<' in the message opens one of our own links.
    links = [part.split(">")[0] for part in flat.split("<")[1:]]
    assert all(link.startswith(("https://news.example.com", "https://runbooks.example.com")) for link in links), links


def _section_texts(message: dict) -> list[str]:
    return [b["text"]["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b]


def test_slack_sections_fit_slacks_limit_with_long_headlines() -> None:
    """Slack answers a section over 3,000 characters with HTTP 400: the trigger went dead and held its resolve.
    Titles may be 2,000 characters and URLs 2,048; every headline must still be listed, links never cut."""
    from alerts.notifiers.slack import SECTION_LIMIT, slack_message
    from alerts.payloads import group_payload

    long_url = "https://news.google.com/rss/articles/" + "CBMi" * 500
    headlines = [{"title": f"Headline {i} & " + "x" * 1990, "url": long_url if i % 2 else f"https://ex.com/{i}",
                  "score": -0.9} for i in range(5)]
    alert = sample_alert(evidence={**sample_alert()["evidence"], "headlines": headlines})
    message = slack_message(notification_payload(alert, "trigger"))
    texts = _section_texts(message)
    assert max(len(t) for t in texts) <= SECTION_LIMIT
    flat = "\n".join(texts)
    assert all(f"Headline {i} &amp; " in flat for i in range(5))
    assert "<https://ex.com/0|Headline 0" in flat and long_url not in flat  # short links kept, overlong dropped
    assert all(line.count("<") == line.count(">") for line in flat.splitlines())  # no link cut in half

    group = [{**alert, "id": 100 + i, "scope": f"T{i}"} for i in range(40)]
    message = slack_message(group_payload(group, "trigger", "g"))
    texts = _section_texts(message)
    assert len(message["blocks"]) <= 50 and max(len(t) for t in texts) <= SECTION_LIMIT
    assert message["blocks"][-1]["type"] == "context" and all(f"alert #{100 + i})" in "".join(texts) for i in range(40))


def test_pagerduty_trigger_ack_resolve_share_dedup_key(http_recorder) -> None:
    pd = PagerDutyNotifier("pd", "routing-key-1", http_recorder.url("/v2/enqueue"))
    pd.send(notification_payload(sample_alert(), "trigger"))
    pd.send(notification_payload(sample_alert(state="acknowledged", acknowledged_by="ann"), "acknowledge"))
    pd.send(notification_payload(sample_alert(state="resolved"), "resolve"))
    trigger, ack, resolve = (r.json() for r in http_recorder.requests)
    assert [trigger["event_action"], ack["event_action"], resolve["event_action"]] == ["trigger", "acknowledge", "resolve"]
    assert trigger["dedup_key"] == ack["dedup_key"] == resolve["dedup_key"] == sample_alert()["dedup_key"]
    assert trigger["routing_key"] == "routing-key-1"
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "marketmood"
    assert trigger["payload"]["custom_details"]["current_share"] == 0.61
    assert "series" not in trigger["payload"]["custom_details"]
    assert trigger["links"] == [{"href": "https://example.com/a1", "text": "Oil tanker explodes in Gulf"}]
    assert "payload" not in resolve


def test_email_with_evidence_plot(smtp_recorder) -> None:
    notifier = EmailNotifier("mail", "127.0.0.1", smtp_recorder.port, "mm@example.com", ("desk@example.com",))
    notifier.send(notification_payload(sample_alert(), "trigger"))
    notifier.send(notification_payload(sample_alert(state="resolved"), "resolve"))
    trigger, resolve = smtp_recorder.messages
    assert trigger["Subject"].startswith("[MarketMood] [CRITICAL] negative-sentiment spike in topic Energy | Oil")
    assert trigger["To"] == "desk@example.com"
    parts = list(trigger.walk())
    text = next(p for p in parts if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert "Oil tanker explodes in Gulf" in text and "https://example.com/a1" in text
    png = next(p for p in parts if p.get_content_type() == "image/png").get_payload(decode=True)
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert resolve["Subject"].startswith("[MarketMood] RESOLVED")
    assert not any(p.get_content_type() == "image/png" for p in resolve.walk())


def test_email_subject_is_one_line_whatever_the_scope(smtp_recorder) -> None:
    """A header cannot hold a line break: before, EmailMessage raised and the row failed on every retry."""
    notifier = EmailNotifier("mail", "127.0.0.1", smtp_recorder.port, "mm@example.com", ("desk@example.com",),
                             attach_plot=False)
    notifier.send(notification_payload(sample_alert(scope_type="ticker", scope="BRK\nB\r\n X"), "trigger"))
    (message,) = smtp_recorder.messages
    subject = str(message["Subject"])
    assert "\n" not in subject and "\r" not in subject and "in ticker BRK B X:" in subject


def test_smtp_refusals(smtp_recorder) -> None:
    """Every recipient refused for good is permanent (dead, not retried forever); some refused is a delivery to
    the others, which a retry would page twice."""
    smtp_recorder.handler.refuse = {"gone@example.com", "left@example.com"}
    payload = notification_payload(sample_alert(), "resolve")
    with pytest.raises(DeliveryError) as info:
        EmailNotifier("mail", "127.0.0.1", smtp_recorder.port, "mm@example.com",
                      ("gone@example.com", "left@example.com")).send(payload)
    assert not info.value.retryable and "gone@example.com" in str(info.value)
    EmailNotifier("mail", "127.0.0.1", smtp_recorder.port, "mm@example.com",
                  ("gone@example.com", "desk@example.com")).send(payload)
    assert [rcpts for _, rcpts in smtp_recorder.handler.envelopes] == [["desk@example.com"]]


def test_http_failures_are_classified(http_recorder) -> None:
    hook = WebhookNotifier("hook", http_recorder.url("/hook"), SECRET, timeout_s=2)
    payload = notification_payload(sample_alert(), "trigger")
    http_recorder.status = 500
    with pytest.raises(DeliveryError) as info:
        hook.send(payload)
    assert info.value.retryable and "HTTP 500" in str(info.value)
    http_recorder.status = 429
    with pytest.raises(DeliveryError) as info:
        hook.send(payload)
    assert info.value.retryable
    http_recorder.status = 403
    with pytest.raises(DeliveryError) as info:
        hook.send(payload)
    assert not info.value.retryable
    http_recorder.stop()
    with pytest.raises(DeliveryError) as info:
        hook.send(payload)
    assert info.value.retryable and "Connect" in str(info.value)
    assert http_recorder.requests == []


def test_smtp_down_is_retryable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = EmailNotifier("mail", "127.0.0.1", port, "mm@example.com", ("desk@example.com",), timeout_s=2)
    with pytest.raises(DeliveryError) as info:
        notifier.send(notification_payload(sample_alert(), "resolve"))
    assert info.value.retryable


def test_an_escalation_is_a_trigger_with_its_own_delivery_key() -> None:
    from alerts.payloads import delivery_key

    first = notification_payload(sample_alert(), "trigger")
    escalated = notification_payload(sample_alert(), "trigger", escalation=2)
    assert escalated["escalation"] == 2 and escalated["summary"].startswith("ESCALATED (2), stronger while open: ")
    keys = {delivery_key(first), delivery_key(escalated), delivery_key(notification_payload(sample_alert(), "trigger",
                                                                                         escalation=3))}
    assert len(keys) == 3  # a retry of one escalation repeats its key; another escalation has its own
    with pytest.raises(ValueError, match="is a trigger"):
        notification_payload(sample_alert(), "resolve", escalation=1)
    released = notification_payload(sample_alert(), "trigger", unsilenced=1)
    assert released["summary"].startswith("SILENCE ENDED, still firing: ")
    assert delivery_key(released) not in keys  # the outbox and the receivers' idempotency keep it apart


def _self_signed_cert(tmp_path):
    """A self-signed certificate for 127.0.0.1 (the openssl CLI: no extra Python dependency)."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_smtp_over_ssl_verifies_the_server_certificate(tmp_path, monkeypatch) -> None:
    """``ssl: true`` (implicit TLS, port 465) must check the server's certificate as ``starttls`` does: before,
    smtplib.SMTP_SSL got no context and used one that verifies nothing, so anyone on the path could pose as the
    relay and collect the SMTP login and every alert."""
    import ssl

    from aiosmtpd.controller import Controller

    from tests.alerts.conftest import _free_port, _SmtpHandler

    cert, key = _self_signed_cert(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    handler = _SmtpHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=server_tls)
    controller.start()
    try:
        notifier = EmailNotifier("mail", "127.0.0.1", port, "mm@example.com", ("desk@example.com",),
                                 use_ssl=True, attach_plot=False, timeout_s=5)
        payload = notification_payload(sample_alert(), "resolve")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))  # trust nothing: the cert is unknown
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            notifier.send(payload)
        assert handler.messages == []  # nothing went to a server that could not prove who it is
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the relay's CA is trusted (as an internal CA would be)
        notifier.send(payload)
        assert len(handler.messages) == 1
    finally:
        controller.stop()


def test_slack_group_of_hundreds_of_alerts_stays_within_slacks_limits() -> None:
    """A market-wide sell-off under a per-ticker rule fires hundreds of alerts in one pass, grouped into one Slack
    message. Slack refuses a text object over 3000 characters (HTTP 400, permanent: the trigger goes dead and
    holds the resolves): before, the context line listed every member's id and passed that limit at ~450."""
    from alerts.notifiers.slack import SECTION_LIMIT, slack_message
    from alerts.payloads import group_payload

    members = [sample_alert(id=1_000_000 + i, scope_type="ticker", scope=f"T{i:03d}") for i in range(600)]
    message = slack_message(group_payload(members, "trigger", "spike/critical/slack"))
    texts = [b["text"]["text"] for b in message["blocks"] if "text" in b]
    texts += [e["text"] for b in message["blocks"] for e in b.get("elements", [])]
    assert len(message["blocks"]) <= 50 and max(len(t) for t in texts) <= SECTION_LIMIT
    context = message["blocks"][-1]["elements"][0]["text"]
    assert "600 alerts" in context and "1000000" in context and "more" in context  # how to find the others


def test_email_for_a_large_group_attaches_a_bounded_number_of_plots(smtp_recorder) -> None:
    """One PNG per member, rendered inside the send, made a sell-off group of hundreds of tickers a message of
    tens of MB (over the relay's size limit: a permanent 552, dead) that took minutes to build while every other
    notification waited behind it. The plots of the first MAX_PLOTS members are attached; the text says so."""
    from alerts.notifiers.email import MAX_PLOTS
    from alerts.payloads import group_payload

    members = [sample_alert(id=100 + i, scope_type="ticker", scope=f"T{i:02d}") for i in range(MAX_PLOTS + 2)]
    EmailNotifier("mail", "127.0.0.1", smtp_recorder.port, "mm@example.com", ("desk@example.com",)).send(
        group_payload(members, "trigger", "spike/critical/mail"))
    (message,) = smtp_recorder.messages
    pngs = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert len(pngs) == MAX_PLOTS and pngs[0].get_filename() == "alert-100.png"
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content()
    assert f"Plots attached for {MAX_PLOTS} of {MAX_PLOTS + 2} alerts" in text
    assert text.count("Acknowledge: marketmood alerts ack") == MAX_PLOTS + 2  # every member is still listed


def test_webhook_for_a_scope_with_non_ascii_characters_is_sent(http_recorder) -> None:
    """Tickers are free text from the feeds (upper-cased, control characters dropped: "ÄPFEL", "腾讯" pass), and the
    ``Idempotency-Key`` header carries the dedup key with the scope. HTTP headers are ASCII: before, httpx raised
    UnicodeEncodeError, the row went dead at once and held that alert's resolve (for a group, every member's)."""
    from alerts.payloads import delivery_key

    hook = WebhookNotifier("hook", http_recorder.url("/hook"), SECRET)
    for scope in ("ÄPFEL", "腾讯"):
        alert = sample_alert(scope_type="ticker", scope=scope, dedup_key=f"marketmood/spike/ticker/{scope}/1700000000")
        hook.send(notification_payload(alert, "trigger"))
        hook.send(notification_payload(alert, "trigger"))  # a retry carries the same key
    keys = [r.headers["Idempotency-Key"] for r in http_recorder.requests]
    assert len(keys) == 4 and keys[0] == keys[1] != keys[2] == keys[3] and all(k.isascii() for k in keys)
    assert [r.json()["alert"]["scope"] for r in http_recorder.requests[::2]] == ["ÄPFEL", "腾讯"]
    ascii_alert = sample_alert()  # an ASCII key is sent as it always was (receivers keep de-duplicating)
    hook.send(notification_payload(ascii_alert, "trigger"))
    assert http_recorder.requests[-1].headers["Idempotency-Key"] == delivery_key(
        notification_payload(ascii_alert, "trigger"))


@pytest.mark.parametrize(("size", "headlines", "title_chars"), [(600, 5, 150), (60, 50, 2000)])
def test_webhook_body_for_a_large_group_stays_under_1_mb(http_recorder, size, headlines, title_chars) -> None:
    """A sell-off under a per-ticker rule groups hundreds of alerts into one webhook notification. Before, the
    body carried every member's evidence and headlines (1.5 MB for 600 tickers; 6.5 MB for 60 with 50 long
    headlines each) and receivers that refuse bodies over 1 MB answered 413: dead, holding the group's resolve.
    Now the first members are sent, the group keeps its full size and says how many were left out."""
    from alerts.payloads import delivery_key, group_payload

    def member(i: int) -> dict:
        alert = sample_alert(id=1_000 + i, scope_type="ticker", scope=f"T{i:03d}",
                             dedup_key=f"marketmood/spike/ticker/T{i:03d}/1700000000")
        alert["evidence"]["headlines"] = [
            {"title": f"T{i:03d} headline {j} " + "x" * title_chars, "score": -0.9,
             "url": f"https://news.example.com/markets/2023/11/14/t{i:03d}-story-{j}"} for j in range(headlines)]
        return alert

    payload = group_payload([member(i) for i in range(size)], "trigger", "spike/critical/hook")
    WebhookNotifier("hook", http_recorder.url("/hook"), SECRET).send(payload)
    [req] = http_recorder.requests
    assert len(req.body) < 1_000_000, f"{len(req.body):,} bytes"
    body = req.json()
    sent = [m["alert"]["id"] for m in body["alerts"]]
    assert 0 < len(sent) <= 50 and sent == [1_000 + i for i in range(len(sent))]  # the first members, in order
    assert body["group"]["size"] == size and body["group"]["omitted"] == size - len(sent)
    assert body["summary"] == payload["summary"] and f"{size} tickers" in body["summary"]
    assert body["alert"]["id"] == 1_000  # the lead: single-alert readers still find one alert
    assert verify(SECRET, req.headers["X-MarketMood-Timestamp"], req.body, req.headers["X-MarketMood-Signature"])
    assert req.headers["Idempotency-Key"] == delivery_key(payload)  # a retry still carries the same key


def test_webhook_body_of_a_small_group_lists_every_member(http_recorder) -> None:
    """The bound leaves ordinary groups whole: every member, ``omitted`` 0."""
    from alerts.payloads import group_payload

    members = [sample_alert(id=7 + i, scope=f"Topic {i}") for i in range(3)]
    WebhookNotifier("hook", http_recorder.url("/hook"), SECRET).send(group_payload(members, "resolve", "k"))
    body = http_recorder.requests[0].json()
    assert [m["alert"]["id"] for m in body["alerts"]] == [7, 8, 9]
    assert body["group"] == {"key": "k", "size": 3, "omitted": 0}


def _bulky_alert(kind: str) -> dict:
    """A lead alert whose evidence alone serialises over the webhook's bound, as each kind of bulk can make it."""
    alert = sample_alert()
    ev = alert["evidence"]
    long_headlines = [{"title": f"{j} " + "原油价格暴跌" * 333, "score": -0.9, "source": "wire",
                       "url": f"https://news.example.com/oil/{j}"} for j in range(50)]  # 2,000 chars, \u-escaped
    if kind == "headlines":  # top_headlines: 50 (the rule's maximum) with 2,000-character non-ASCII titles
        ev["headlines"] = long_headlines
        ev["escalations"] = [{"current_share": 0.7 + k / 100, "headlines": long_headlines} for k in range(2)]
    elif kind == "plot":  # an embedded plot or any long text: the headlines themselves are small and stay
        ev["plot_png_base64"] = "iVBORw0KGgo" + "A" * 1_500_000
    elif kind == "escalations":  # a long incident: hundreds of escalations kept with the alert
        ev["escalations"] = [{"current_share": 0.62, "volume": 20 + k, "p_value": 1e-6,
                              "headlines": long_headlines[:3]} for k in range(60)]
    return alert


@pytest.mark.parametrize("kind", ["headlines", "plot", "escalations"])
@pytest.mark.parametrize("event", ["trigger", "resolve", "group"])
def test_webhook_body_never_exceeds_the_bound_whatever_the_leads_evidence(http_recorder, kind, event) -> None:
    """Every webhook body sent is at most MAX_BODY_BYTES, whatever the size of the lead alert's evidence, and still
    names the alert. Before, only a group's members were bounded: a single alert (or a group's lead, sent twice:
    ``alert`` and ``alerts[0]``) whose evidence alone was over 900 kB went out whole (1.5 to 2.2 MB here) and a
    receiver refusing bodies over 1 MB answered 413: the page died. Now the lead's bulky evidence is trimmed,
    the evidence says what was cut (``trimmed``), and the numbers on-call judges by are kept."""
    from alerts.notifiers.webhook import MAX_BODY_BYTES
    from alerts.payloads import delivery_key, group_payload

    lead = _bulky_alert(kind)
    if event == "group":
        others = [sample_alert(id=43 + i, scope=f"Topic {i}", dedup_key=f"marketmood/x/topic/{i}/1") for i in range(3)]
        payload = group_payload([lead, *others], "trigger", "spike/critical/hook")
    else:
        payload = notification_payload(lead, event)
    WebhookNotifier("hook", http_recorder.url("/hook"), SECRET).send(payload)
    [req] = http_recorder.requests
    assert len(req.body) <= MAX_BODY_BYTES, f"{len(req.body):,} bytes"
    body = req.json()
    sent = body["alert"]
    assert sent["id"] == 42 and sent["dedup_key"] == lead["dedup_key"] and body["summary"] == payload["summary"]
    ev = sent["evidence"]
    assert {k: ev[k] for k in ("current_share", "baseline_share", "p_value", "volume")} == {
        k: lead["evidence"][k] for k in ("current_share", "baseline_share", "p_value", "volume")}
    assert ev["trimmed"] and set(ev["trimmed"]) <= set(lead["evidence"]), ev["trimmed"]  # names what was cut
    if kind == "plot":
        assert "plot_png_base64" not in ev and ev["headlines"] == lead["evidence"]["headlines"]
        assert ev["series"] == lead["evidence"]["series"]
    if kind == "headlines":
        assert ev["headlines"] and ev["headlines"][0]["url"] == "https://news.example.com/oil/0"  # the most negative
    if event == "group":
        assert [m["alert"]["id"] for m in body["alerts"]] == [42, 43, 44, 45] and body["group"]["omitted"] == 0
        assert body["alerts"][0]["alert"] == sent  # the lead, trimmed the same way in both places
    assert verify(SECRET, req.headers["X-MarketMood-Timestamp"], req.body, req.headers["X-MarketMood-Signature"])
    assert req.headers["Idempotency-Key"] == delivery_key(payload)  # a retry still carries the same key
    assert "trimmed" not in payload["alert"]["evidence"]  # the stored document is left as it was
