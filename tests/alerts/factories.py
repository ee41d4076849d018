"""Build scored articles for DB-level alert tests (inserted with the real idempotent upsert), and rules
that route to all four notifiers at the tests' local recording servers."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine

from alerts.notifiers.webhook import verify
from alerts.rules import parse_rules
from marketmood.settings import AlertSettings
from storage import alerts as db
from storage.articles import ScoredArticle, upsert_scored_batch
from streams.novelty import story_key

BASE = datetime(2024, 1, 2, 0, 0, tzinfo=timezone.utc)
W = 300


def article(i: str, t: datetime, topic: str, sentiment: str, *, title: str | None = None,
            tickers: tuple[str, ...] = ()) -> ScoredArticle:
    p = {"negative": (0.9, 0.05, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.05, 0.9)}[sentiment]
    title = title or f"{topic} story {i} ({sentiment})"
    return ScoredArticle(
        id=i, title=title, model_version="v1", topic=topic, topic_confidence=0.9, sentiment=sentiment,
        p_negative=p[0], p_neutral=p[1], p_positive=p[2], score=p[2] - p[0], source="test",
        url=f"https://news.example.com/{i}", published_at=t, tickers=tickers, story_key=story_key(title),
    )


def steady(topic: str, start: datetime, windows: int, per_window: int, neg_every: int, prefix: str,
           tickers: tuple[str, ...] = ()) -> list[ScoredArticle]:
    """``per_window`` articles per window; every ``neg_every``-th one negative, the rest neutral."""
    out, k = [], 0
    for w in range(windows):
        for j in range(per_window):
            t = start + timedelta(seconds=w * W + (j + 0.5) * W / per_window)
            out.append(article(f"{prefix}-{w}-{j}", t, topic, "negative" if k % neg_every == 0 else "neutral",
                               tickers=tickers))
            k += 1
    return out


def insert(engine: Engine, items: list[ScoredArticle]) -> None:
    with engine.begin() as conn:
        for i in range(0, len(items), 500):
            upsert_scored_batch(conn, items[i:i + 500])


def alerts_of(engine: Engine, **filters) -> list[dict]:
    """``storage.alerts.list_alerts`` on a connection that is returned at once (polling loops must not
    leak one pooled connection per poll)."""
    with engine.connect() as conn:
        return db.list_alerts(conn, **filters)


def all_notifiers(http_recorder, smtp_recorder, *, secret: str, routing_key: str, to: str) -> dict:
    """Rules-file ``notifiers`` + ``routing``: webhook, Slack, PagerDuty and email, all for ``critical``."""
    return {
        "notifiers": {
            "hook": {"type": "webhook", "url": http_recorder.url("/hook"), "secret": secret},
            "slack": {"type": "slack", "url": http_recorder.url("/slack")},
            "pd": {"type": "pagerduty", "routing_key": routing_key, "events_url": http_recorder.url("/pd")},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp_recorder.port, "from": "mm@example.com",
                     "to": [to]},
        },
        "routing": {"critical": ["hook", "slack", "pd", "mail"]},
    }


def assert_paged_once_then_resolved(http_recorder, smtp_recorder, alert: dict, *, secret: str) -> dict:
    """What on-call must receive from ``all_notifiers`` for one alert: exactly one trigger then one resolve on each
    of the four, webhook bodies signed with ``secret``, one PagerDuty incident (one dedup key) and RESOLVED only on
    the second Slack message and email. Returns the parsed messages for a test's own extra checks."""
    hook = [r for r in http_recorder.requests if r.path == "/hook"]
    assert [r.json()["event"] for r in hook] == ["trigger", "resolve"]
    for r in hook:
        assert verify(secret, r.headers["X-MarketMood-Timestamp"], r.body, r.headers["X-MarketMood-Signature"])
    pd = [r.json() for r in http_recorder.requests if r.path == "/pd"]
    assert [p["event_action"] for p in pd] == ["trigger", "resolve"]
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"] == alert["dedup_key"]
    slack = [r.json()["text"] for r in http_recorder.requests if r.path == "/slack"]
    assert len(slack) == 2 and "RESOLVED" in slack[1] and "RESOLVED" not in slack[0]
    per_path = Counter(r.path for r in http_recorder.requests)
    assert len(http_recorder.requests) == 6, per_path
    subjects = [m["Subject"] for m in smtp_recorder.messages]
    assert len(subjects) == 2 and "RESOLVED" not in subjects[0] and "RESOLVED" in subjects[1]
    return {"pd": pd, "slack": slack, "subjects": subjects}


# -- the end-to-end scenario shared by the service and replica tests ------------------------------------

SECRET = "test-secret-0123456789"
TOPIC = "Energy | Oil"


def rules_for(http_recorder, smtp_recorder, **detection):
    return parse_rules({
        **all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk", to="desk@example.com"),
        "rules": [{"name": "spike", "scope": {"type": "topic", "include": [TOPIC, "Macro"]}, "severity": "critical",
                   "detection": {"cooldown_minutes": 60, **detection}}],
    })


SETTINGS = AlertSettings(window_s=W, late_grace_s=0, retry_base_s=1, retry_max_s=8)


def scenario(engine) -> datetime:
    """6 h of steady news (20% negative, 72/h), then a 30-min burst at ~70% negative, then 2 h calm.
    Meanwhile a wire story syndicated 40 times in 'Macro' must not alert."""
    hours6 = 72
    items = steady(TOPIC, BASE, hours6, per_window=6, neg_every=5, prefix="base")
    burst_start = BASE + timedelta(hours=6)
    for w in range(6):
        for j in range(6):
            t = burst_start + timedelta(seconds=w * W + 25 + j * 45)
            items.append(article(f"burst-{w}-{j}", t, TOPIC, "negative" if j != 5 and j != 2 else "neutral",
                                 title=f"Refinery fire number {w}-{j} hits output"))
    items += steady(TOPIC, burst_start + timedelta(minutes=30), 24, per_window=6, neg_every=5, prefix="after")
    items += steady("Macro", BASE, hours6 + 30, per_window=4, neg_every=5, prefix="macro")
    items += [article(f"wire-{k}", burst_start + timedelta(seconds=20 * k), "Macro", "negative",
                      title=f"{'UPDATE 1-' if k % 2 else ''}Recession fears grip markets as GDP shrinks - Reuters")
              for k in range(40)]
    insert(engine, items)
    ITEMS[:] = items
    return burst_start


ITEMS: list = []


def escalation_scenario(engine) -> tuple[datetime, datetime]:
    """6 h at 10 % negative in TOPIC, then a new normal of 50 % (the alert opens and stays open: its baseline
    is frozen), then 3 h later a 30-min burst of all-negative news on top (an escalation). Returns the starts
    of the shift and of the burst."""
    items = steady(TOPIC, BASE, 72, per_window=6, neg_every=10, prefix="base")
    shift = BASE + timedelta(hours=6)
    items += steady(TOPIC, shift, 36, per_window=6, neg_every=2, prefix="shift")
    burst = shift + timedelta(hours=3)
    items += [article(f"pipe-{w}-{j}", burst + timedelta(seconds=w * W + 20 + j * 45), TOPIC, "negative",
                      title=f"Pipeline explosion {w}-{j} shuts terminal") for w in range(6) for j in range(6)]
    items += steady(TOPIC, burst + timedelta(minutes=30), 18, per_window=6, neg_every=2, prefix="after")
    insert(engine, items)
    return shift, burst


def escalation_rules(http_recorder, smtp_recorder):
    """The scenario rule with escalation on (2-h trailing baseline, alerts frozen up to 12 h)."""
    return rules_for(http_recorder, smtp_recorder, baseline_hours=2, max_frozen_hours=12, prior_strength=200,
                     escalate_p=0.001)


# -- news.raw headlines for the end-to-end tests through tansu and the real worker -------------------------

SITES = ("Baytown", "Beaumont", "Guyana", "Permian Basin", "Singapore", "Rotterdam", "Louisiana", "Texas")

CALM = (  # routine, neutral-to-positive company news
    "Exxon Mobil declares quarterly dividend, yield steady at {p}%",
    "Exxon Mobil boosts output at new {site} field by {p}%",
    "Exxon Mobil to present {site} growth plan with ${b} billion budget at investor conference",
    "Exxon Mobil signs ${b} billion LNG supply deal with {site} buyers",
    "Exxon Mobil starts production at ${b} billion {site} project on schedule",
    "Exxon Mobil raises refinery capacity in {site} by {p}%",
)
BURST = (  # unmistakably bad news
    "Exxon Mobil shares plunge {p}% after deadly explosion at {site} refinery",
    "Exxon Mobil warns of heavy losses as oil price collapses {p}%",
    "Exxon Mobil stock collapses {p}% as {site} spill triggers criminal probe",
    "Exxon Mobil slashes dividend after record ${b} billion quarterly loss",
    "Exxon Mobil halts output at {site} after catastrophic fire, shares crash {p}%",
    "Exxon Mobil credit rating cut to junk as losses mount to ${b} billion after {site} blast",
)


def headline_message(i: int, t: datetime, template: str, kind: str) -> dict:
    """A news.raw message from a CALM/BURST template (XOM); unique per ``i``: distinct stories, no copies."""
    # every template has {p} or {b}, unique per article: distinct stories, none a syndicated copy
    title = template.format(p=f"{2 + (i * 37 % 170) / 10:.1f}", b=f"{1 + i * 0.7:.1f}", site=SITES[i % len(SITES)])
    return {"id": f"e2e-{kind}-{i}", "title": title, "source": "e2e",
            "url": f"https://news.example.com/{kind}/{i}", "published_at": t.isoformat(), "tickers": ["XOM"],
            "lang": "en"}
