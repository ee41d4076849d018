"""The rules file is validated at start with readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.rules import DEFAULT_RULES_PATH, RulesError, load_rules, parse_rules

EXAMPLE = Path(__file__).resolve().parents[2] / "alerts" / "rules.example.yaml"


def test_default_rules_load() -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    assert {r.name for r in rules.rules} >= {"topic-negative-spike", "ticker-negative-spike"}
    assert rules.rules[0].scope.scopes() is None


def test_example_rules_expand_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "rk-1")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:1/slack")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://127.0.0.1:1/hook")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "s" * 32)
    monkeypatch.delenv("PAGERDUTY_EVENTS_URL", raising=False)
    rules = load_rules(EXAMPLE)
    assert rules.notifiers["oncall-pagerduty"].routing_key == "rk-1"
    assert rules.notifiers["oncall-pagerduty"].events_url == "https://events.pagerduty.com/v2/enqueue"
    assert rules.route("critical")[0] == "oncall-pagerduty"
    assert rules.rules[1].scope.scopes() == ("Energy | Oil", "Macro", "Fed | Central Banks")
    assert rules.rules[0].scope.excluded() == frozenset({"General News | Opinion"})


def test_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_URL", raising=False)
    with pytest.raises(RulesError, match="NOPE_URL") as raised:
        parse_rules({"notifiers": {"s": {"type": "slack", "url": "${NOPE_URL}"}}, "rules": [
            {"name": "r", "scope": {"type": "topic"}}]}, source="oncall.yaml")
    # the file and the key too: with several notifiers using one variable, the name alone does not say where
    assert "oncall.yaml" in str(raised.value) and "notifiers.s.url" in str(raised.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"rules": []}, "rules: Tuple should have at least 1 item"),
        ({"rules": [{"name": "r", "scope": {"type": "sector"}}]}, "rules.0.scope.type"),
        ({"rules": [{"name": "r", "scope": {"type": "topic", "include": ["Crypto"]}}]}, "unknown topic label 'Crypto'"),
        ({"rules": [{"name": "r", "scope": {"type": "topic"}, "severity": "sev1"}]}, "rules.0.severity"),
        ({"rules": [{"name": "r", "scope": {"type": "topic"}, "detection": {"fire_p": 0.1, "resolve_p": 0.01}}]},
         "resolve_p (0.01) must be >= fire_p (0.1)"),
        ({"rules": [{"name": "r", "scope": {"type": "topic"}, "detection": {"min_volme": 3}}]},
         "rules.0.detection.min_volme: Extra inputs are not permitted"),
        ({"routing": {"critical": ["pd"]}, "rules": [{"name": "r", "scope": {"type": "topic"}}]},
         "routing.critical names notifier 'pd', which is not defined"),
        ({"notifiers": {"h": {"type": "webhook", "url": "http://x", "secret": "short"}},
          "rules": [{"name": "r", "scope": {"type": "topic"}}]}, "notifiers.h.webhook.secret"),
        ({"rules": [{"name": "r", "scope": {"type": "topic"}}, {"name": "r", "scope": {"type": "ticker"}}]},
         "rule name 'r' is used twice"),
        ({"rules": [{"name": "t", "scope": {"type": "ticker"}, "inhibited_by": ["nope"]}]},
         "inhibited_by names 'nope', which is not a topic rule"),
        ({"rules": [{"name": "a", "scope": {"type": "topic"}, "inhibited_by": ["a"]}]},
         "inhibited_by is for ticker rules"),
        ({"notifiers": {"m": {"type": "email", "host": "smtp", "from": "a@x", "to": ["b@x"], "ssl": True,
                              "starttls": True}}, "rules": [{"name": "r", "scope": {"type": "topic"}}]},
         "starttls and ssl are exclusive"),
        ({"rules": [{"name": "r", "scope": {"type": "topic"}, "detection": {"rate_fire_p": 0.2}}]},
         "rate_fire_p (0.2) must be <= resolve_p"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_invalid_rules_have_clear_errors(data: object, expected: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(data, "rules.yaml")
    assert expected in str(info.value)
    assert "rules.yaml" in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(bad)
    with pytest.raises(RulesError, match="does not exist"):
        load_rules(tmp_path / "missing.yaml")
    toml = tmp_path / "r.toml"
    toml.write_text('[[rules]]\nname = "t"\nscope = {type = "ticker", include = ["aapl"]}\n')
    assert load_rules(toml).rules[0].scope.scopes() == ("AAPL",)
