"""The demo's feeds: generated news with a burst, or real Reuters history retimed onto now."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import islice

import pytest

from marketmood.demo.run import generated_feed, reuters_feed
from marketmood.settings import ConfigError, load_settings


def test_reuters_history_is_replayed_from_the_chosen_day_onto_now_at_speed() -> None:
    data_path = load_settings().data_path
    if not (data_path / "reuters_news_stream").is_dir():
        pytest.skip("the Reuters stream is not under MARKETMOOD_DATA_PATH")
    before = datetime.now(timezone.utc)
    feed = reuters_feed(data_path, replay_from=datetime(2016, 3, 1, tzinfo=timezone.utc), speed=3600, articles=50)
    records = list(islice(feed.records, 50))
    times = [datetime.fromisoformat(r["published_at"]) for r in records]
    originals = {r["original_published_at"][:10] for r in records}
    assert feed.total == 50 and feed.rate == 0 and feed.live is not None and feed.phase(0) == "replay"
    assert min(originals) >= "2016-03-01" and all(r.get("time_precision") == "day" for r in records)
    assert before - timedelta(seconds=5) <= times[0] <= datetime.now(timezone.utc) + timedelta(seconds=5)
    assert times == sorted(times) and times[-1] - times[0] < timedelta(hours=1)  # 3600x: days become seconds


def test_a_missing_reuters_stream_is_a_clear_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no Reuters stream"):
        reuters_feed(tmp_path, replay_from=datetime(2016, 3, 1, tzinfo=timezone.utc), speed=60, articles=None)


def test_the_generated_feed_names_its_burst_and_caps_the_articles() -> None:
    feed = generated_feed(10.0, (4.0, 2.0, 4.0), seed=7, articles=30)
    assert feed.total == 30 and feed.rate == 10.0 and feed.live is None
    assert "burst of bad news about" in feed.hint
    assert [feed.phase(i) for i in (0, 45, 99)] == ["calm", "burst", "recovery"]


@pytest.mark.parametrize("phases", ["nan,30,50", "40,inf,50", "1e308,30,50", "40,30,-1"])
def test_phases_that_are_not_finite_seconds_are_a_usage_error(  # type: ignore[no-untyped-def]
        phases: str, tmp_path, monkeypatch) -> None:
    """NaN passed every comparison and inf overflowed the article count: a traceback (ValueError, OverflowError)."""
    from click.testing import CliRunner

    from marketmood.cli import cli
    from marketmood.settings import get_settings

    monkeypatch.setenv("MARKETMOOD_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["demo", "--phases", phases])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2 and "expected CALM,BURST,RECOVERY seconds" in result.output, (
        result.output, result.exception)
    assert not (tmp_path / "home").exists()  # refused before anything started
