"""``marketmood report`` on demo data: a week of the generated news stream scored by the bundled model, an
alert and two model changes; every panel of the dashboard has data, charts are PNGs, one HTML page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from marketmood.cli import cli
from marketmood.dashboards.definitions import sentiment_dashboard, to_json_dict
from marketmood.settings import get_settings
from storage import registry
from storage.alerts import insert_alert
from storage.articles import ScoredArticle, upsert_scored_batch
from storage.db import make_engine
from streams.demo_news import DemoStream
from streams.novelty import story_key

N_ARTICLES = 700


def _seed_demo_week(url: str) -> None:
    """The demo stream spread over the last 7 days (its negative Energy burst in the last day), scored."""
    from models import load_engine

    engine = make_engine(url)
    classifier = load_engine()
    try:
        with engine.begin() as conn:
            now = conn.execute(select(func.now())).scalar_one()
            start = now - timedelta(days=7)
            step = timedelta(days=7) / N_ARTICLES
            stream = DemoStream(n_articles=N_ARTICLES, seed=11, run_id="report", burst_start=0.88, burst_end=0.97)
            clock = iter(start + step * i for i in range(N_ARTICLES))
            articles = list(stream.articles(now=lambda: next(clock)))
            predictions = classifier.classify([a["title"] for a in articles])
            items = [
                ScoredArticle(
                    id=a["id"], title=a["title"], model_version=p.model_version, topic=p.topic,
                    topic_confidence=p.topic_confidence, sentiment=p.sentiment, p_negative=p.p_negative,
                    p_neutral=p.p_neutral, p_positive=p.p_positive, score=p.score, source=a["source"], url=a["url"],
                    published_at=datetime.fromisoformat(a["published_at"]), tickers=a["tickers"],
                    story_key=story_key(a["title"]),
                )
                for a, p in zip(articles, predictions)
            ]
            upsert_scored_batch(conn, items)
            version = predictions[0].model_version
            registry.insert_version(conn, version=version, artifact=b"", artifact_sha256="0" * 64)
            registry.set_alias(conn, version, by="demo", reason="bundled model")
            insert_alert(conn, rule="topic-negative-spike", scope_type="topic", scope="Energy | Oil",
                         severity="warning", state="firing", dedup_key="demo-energy", started_at=now - timedelta(hours=12),
                         evidence={"current_share": 0.7, "baseline_share": 0.15, "volume": 20, "p_value": 0.001,
                                   "headlines": [{"title": items[-30].title, "url": items[-30].url}]})
    finally:
        engine.dispose()


@pytest.fixture
def demo_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _seed_demo_week(db_url)
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def test_report_renders_every_panel_with_data(demo_db: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "--since", "7d", "--out", str(out), "--min-articles", "3"])
    assert result.exit_code == 0, result.output
    assert "no data in this range" not in result.output, result.output

    page = (out / "index.html").read_text(encoding="utf-8")
    dashboard = to_json_dict(sentiment_dashboard())
    for panel in dashboard["panels"]:
        assert f"<h2>{panel['title']}</h2>" in page
    assert "No data in this range" not in page
    charts = sorted(out.glob("*.png"))
    series_panels = [p for p in dashboard["panels"] if p["type"] == "timeseries"]
    assert len(charts) == len(series_panels)
    for chart in charts:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
        assert f'src="{chart.name}"' in page
    assert "https://marketmood.invalid/demo/report/" in page  # headline links
    assert "Energy | Oil" in page  # the burst's topic is a top mover and the alert's scope


def test_report_says_which_panels_are_empty(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["report", "--since", "2d", "--out", str(tmp_path)])
        bad = CliRunner().invoke(cli, ["report", "--since", "two days", "--out", str(tmp_path)])
        # a topic that does not exist is a usage error (it rendered empty panels before), not a silent empty report
        unknown = CliRunner().invoke(cli, ["report", "--topic", "Sports", "--out", str(tmp_path / "x")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "no data in this range: Sentiment index (selection)" in result.output
    assert "No data in this range" in (tmp_path / "index.html").read_text(encoding="utf-8")
    assert bad.exit_code == 2 and "expected a number and a unit" in bad.output
    assert unknown.exit_code == 2 and "unknown topic label 'Sports'" in unknown.output


def test_bucket_size_keeps_charts_readable() -> None:
    from marketmood.report.panels import bucket_for

    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert bucket_for(now - timedelta(days=2), now) == timedelta(hours=1)
    assert bucket_for(now - timedelta(days=7), now) == timedelta(hours=3)
    assert bucket_for(now - timedelta(days=30), now) == timedelta(hours=13)


def test_a_hidden_bucket_is_a_gap_except_on_the_index_panels() -> None:
    """The dashboard connects only the EMA across buckets under the minimum article count; the report joined the
    negative share's points across them too, drawing values the panel hides."""
    from math import isnan

    from marketmood.report.render import line_points

    t = [datetime(2026, 1, 1, h, tzinfo=timezone.utc) for h in range(3)]
    xs, ys = line_points("Negative share per topic", t, [0.2, None, 0.4])
    assert xs == t and ys[0] == 0.2 and isnan(ys[1]) and ys[2] == 0.4
    assert line_points("Sentiment index per topic", t, [0.2, None, 0.4]) == ([t[0], t[2]], [0.2, 0.4])


def test_an_unwritable_folder_or_a_range_before_year_1_is_one_line(db_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Both were tracebacks: NotADirectoryError after the queries ran, OverflowError computing the start."""
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    (tmp_path / "a-file").write_text("in the way")
    get_settings.cache_clear()
    try:
        blocked = CliRunner().invoke(cli, ["report", "--since", "1d", "--out", str(tmp_path / "a-file" / "report")])
        ancient = CliRunner().invoke(cli, ["report", "--since", "800000d", "--out", str(tmp_path / "r")])
    finally:
        get_settings.cache_clear()
    assert blocked.exit_code == 1 and blocked.exception is not None and isinstance(blocked.exception, SystemExit), (
        blocked.output, blocked.exception)
    assert f"Error: cannot write the report to {tmp_path / 'a-file' / 'report'}" in blocked.output, blocked.output
    assert ancient.exit_code == 2 and "before the year 1" in ancient.output, (ancient.output, ancient.exception)


def _seed_one_article(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            now = conn.execute(select(func.now())).scalar_one()
            registry.insert_version(conn, version="v1", artifact=b"", artifact_sha256="0" * 64)
            registry.set_alias(conn, "v1", by="tests", reason="first")
            upsert_scored_batch(conn, [ScoredArticle(
                id="one", title="Acme shares plunge after profit warning", model_version="v1", topic="Earnings",
                topic_confidence=0.9, sentiment="negative", p_negative=0.9, p_neutral=0.05, p_positive=0.05,
                score=-0.85, source="wire", url="https://news.example/one", published_at=now - timedelta(hours=2),
                tickers=["ACME"], story_key=story_key("Acme shares plunge after profit warning"))])
    finally:
        engine.dispose()


def test_a_report_replaces_its_own_page_and_charts_but_never_another_index_html(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out .` in a website's folder replaced its index.html without a word; a second report into a folder left
    the first one's charts of panels that now have no data next to the new page."""
    _seed_one_article(db_url)
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    out, site = tmp_path / "report", tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><title>My site</title></html>", encoding="utf-8")
    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(cli, ["report", "--since", "1d", "--out", str(out), "--min-articles", "1"])
        charts = sorted(p.name for p in out.glob("*.png"))
        again = CliRunner().invoke(cli, ["report", "--since", "1d", "--out", str(out), "--ticker", "ZZZZ"])
        foreign = CliRunner().invoke(cli, ["report", "--since", "1d", "--out", str(site)])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0 and first.output.startswith(f"wrote {out / 'index.html'}"), first.output
    assert len(charts) == 5, charts
    assert again.exit_code == 0 and f"replaced the previous report: {out / 'index.html'} (0 charts" in again.output, (
        again.output)
    assert sorted(p.name for p in out.glob("*.png")) == []  # no chart of the first range next to the new page
    assert foreign.exit_code == 1 and "is not a MarketMood report: not overwriting it" in foreign.output, (
        foreign.output, foreign.exception)
    assert (site / "index.html").read_text(encoding="utf-8") == "<html><title>My site</title></html>"
    assert sorted(p.name for p in site.iterdir()) == ["index.html"]
