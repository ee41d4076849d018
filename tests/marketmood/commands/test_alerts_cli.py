"""``marketmood alerts``: values PostgreSQL or Python cannot hold are usage errors (exit 2), not tracebacks."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.settings import get_settings


@pytest.fixture
def runner(db_url, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.mark.parametrize(("args", "message"), [
    # a bare number is minutes: ~19,000 years ended after 9999 and the row could not be read back (ValueError)
    (["alerts", "silence", "--ticker", "AAPL", "--for", "9999999999"], "longest silence"),
    (["alerts", "silence", "--topic", "Macro", "--for", "3000000d"], "longest silence"),
    # ids and limits beyond a bigint reached PostgreSQL: "bigint out of range" (a DataError traceback)
    (["alerts", "outbox", "--alert", "99999999999999999999"], "--alert"),
    (["alerts", "redrive", "99999999999999999999"], "OUTBOX_IDS"),
    (["alerts", "list", "--limit", "99999999999999999999"], "--limit"),
    # a port outside 0-65535 crashed in the metrics server after the database had started
    (["alerts", "run", "--metrics-port", "-5"], "--metrics-port"),
    (["alerts", "run", "--metrics-port", "70000"], "--metrics-port"),
])
def test_out_of_range_values_are_usage_errors(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert message in result.output, result.output


def test_a_century_of_silence_is_still_allowed(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["alerts", "silence", "--ticker", "AAPL", "--for", "36500d"])
    assert result.exit_code == 0 and "ticker:AAPL until 21" in result.output, (result.output, result.exception)
