"""The alert rules file: scopes, thresholds, severities, routing and notifier config, validated at start.

A YAML (or TOML) file; ``${VAR}`` / ``${VAR:-default}`` in string values are read from the environment so
secrets stay out of the file. ``load_rules`` turns every pydantic error into one readable ``RulesError``
that names the file and the offending key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alerts.detector import DetectionParams
from models.labels import TOPIC_LABELS, normalize_topic

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.default.yaml")
Severity = Literal["critical", "error", "warning", "info"]
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RulesError(ValueError):
    """The rules file is missing or invalid; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebhookConfig(_Model):
    type: Literal["webhook"]
    url: str
    secret: str = Field(min_length=16, description="HMAC-SHA256 key; receivers verify X-MarketMood-Signature.")
    headers: dict[str, str] = {}


class SlackConfig(_Model):
    type: Literal["slack"]
    url: str


class PagerDutyConfig(_Model):
    type: Literal["pagerduty"]
    routing_key: str = Field(min_length=1)
    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    source: str = "marketmood"


class EmailConfig(_Model):
    type: Literal["email"]
    host: str
    port: int = Field(25, ge=1, le=65535)
    from_addr: str = Field(alias="from")
    to: tuple[str, ...] = Field(min_length=1)
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    ssl: bool = False
    attach_plot: bool = True

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailConfig:
        # STARTTLS upgrades a plain connection; ssl opens a TLS one: asked for both, every send fails for ever
        if self.starttls and self.ssl:
            raise ValueError("starttls and ssl are exclusive: ssl for implicit TLS (port 465), starttls to "
                             "upgrade a plain connection (port 587)")
        return self


NotifierConfig = Annotated[
    WebhookConfig | SlackConfig | PagerDutyConfig | EmailConfig, Field(discriminator="type")
]


class ScopeConfig(_Model):
    """Which topics or tickers a rule watches: ``all`` or an explicit list, minus ``exclude``."""

    type: Literal["topic", "ticker"]
    include: Literal["all"] | tuple[str, ...] = "all"
    exclude: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _known_topics(self) -> ScopeConfig:
        if self.type != "topic":
            return self
        names = [] if self.include == "all" else list(self.include)
        for name in [*names, *self.exclude]:
            normalize_topic(name)  # raises UnknownLabelError (a ValueError) listing valid topics
        return self

    def scopes(self) -> tuple[str, ...] | None:
        """Canonical scope names to query, or None for all."""
        if self.include == "all":
            return None
        if self.type == "topic":
            return tuple(normalize_topic(t) for t in self.include)
        return tuple(t.upper() for t in self.include)

    def excluded(self) -> frozenset[str]:
        if self.type == "topic":
            return frozenset(normalize_topic(t) for t in self.exclude)
        return frozenset(t.upper() for t in self.exclude)


class RuleConfig(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    description: str = ""
    scope: ScopeConfig
    severity: Severity = "warning"
    detection: DetectionParams = DetectionParams()
    top_headlines: int = Field(5, ge=0, le=50)
    runbook_url: str | None = Field(None, description="Runbook for this rule (else the service default).")
    repeat_interval_minutes: float | None = Field(
        None, gt=0, description="Remind the trigger's notifiers this often while the alert keeps firing (unacked)."
    )
    group: bool = Field(
        True, description="Alerts of this rule that fire (or resolve) in one evaluation reach Slack, email "
                          "and webhooks as one message (PagerDuty still gets one event per alert).")
    inhibited_by: tuple[str, ...] = Field(
        (), description="Topic rules whose open alert on this ticker's topic holds this rule's notifications."
    )


class RulesFile(_Model):
    notifiers: dict[str, NotifierConfig] = {}
    routing: dict[Severity, tuple[str, ...]] = {}
    rules: tuple[RuleConfig, ...] = Field(min_length=1)

    @field_validator("notifiers")
    @classmethod
    def _notifier_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name):
                raise ValueError(f"notifier name {name!r} must be lower-case letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="after")
    def _cross_refs(self) -> RulesFile:
        for severity, names in self.routing.items():
            for name in names:
                if name not in self.notifiers:
                    raise ValueError(
                        f"routing.{severity} names notifier {name!r}, which is not defined under notifiers "
                        f"(defined: {sorted(self.notifiers) or 'none'})"
                    )
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        by_name = {r.name: r for r in self.rules}
        for rule in self.rules:
            for source in rule.inhibited_by:
                if rule.scope.type != "ticker":
                    raise ValueError(f"rule {rule.name!r}: inhibited_by is for ticker rules (held by a topic rule)")
                if source not in by_name or by_name[source].scope.type != "topic":
                    raise ValueError(f"rule {rule.name!r}: inhibited_by names {source!r}, which is not a topic rule "
                                     f"of this file")
        return self

    def evaluation_order(self) -> tuple[RuleConfig, ...]:
        """Rules to judge in one pass: inhibited rules after the rules that may hold them, so a ticker alert
        fired in the same window as its topic alert is held, not paged."""
        return tuple(sorted(self.rules, key=lambda r: bool(r.inhibited_by)))

    def not_judged_because(self, rule: str, scope_type: str, scope: str) -> str | None:
        """Why no rule of this file judges an alert's scope any more (its rule removed, the rule's scope type
        changed, the scope excluded or no longer included), or None when its rule still does."""
        found = next((r for r in self.rules if r.name == rule), None)
        if found is None:
            return f"rule {rule!r} is no longer in the rules file"
        if found.scope.type != scope_type:
            return f"rule {rule!r} now judges {found.scope.type}s, not {scope_type}s"
        if scope in found.scope.excluded():
            return f"{scope_type} {scope!r} is excluded from rule {rule!r}"
        wanted = found.scope.scopes()
        if wanted is not None and scope not in wanted:
            return f"{scope_type} {scope!r} is no longer included in rule {rule!r}"
        return None

    def check_window(self, window_s: int) -> None:
        """Refuse rules that cannot work with the service's window length: a baseline shorter than one window is
        always empty (``min_baseline_volume`` is never met), so the rule would silently never fire."""
        for rule in self.rules:
            if rule.detection.baseline_hours * 3600 < window_s:
                raise RulesError(f"rule {rule.name!r}: baseline_hours {rule.detection.baseline_hours} is shorter "
                                 f"than one {window_s}-second window, so its baseline is always empty and it "
                                 f"can never fire")

    def route(self, severity: str) -> tuple[str, ...]:
        """Notifier names a severity is routed to (none when unrouted)."""
        return self.routing.get(severity, ())  # type: ignore[call-overload]


def _expand_env(value: Any, path: tuple[str, ...] = ()) -> Any:
    """``value`` with ``${VAR}`` read from the environment; ``path`` is the key path, named when one is unset."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            where = ".".join(path) or "(top level)"
            raise RulesError(f"{where}: environment variable {name} is not set (used as ${{{name}}})")
        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, str(i))) for i, v in enumerate(value)]
    return value


def parse_rules(data: Any, source: str = "<rules>") -> RulesFile:
    """Validate already-parsed rules data; errors name the source and the offending key path."""
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping with 'rules' (and 'notifiers', 'routing')")
    try:
        expanded = _expand_env(data)
    except RulesError as exc:  # the file as well as the key: "slack.webhook_url: ... not set" alone is ambiguous
        raise RulesError(f"invalid alert rules in {source}: {exc}") from None
    try:
        return RulesFile.model_validate(expanded)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        raise RulesError(f"invalid alert rules in {source}:\n" + "\n".join(lines)) from None


def load_rules(path: Path | None = None) -> RulesFile:
    """Read and validate a rules file (default: the bundled ``rules.default.yaml``)."""
    path = Path(path) if path is not None else DEFAULT_RULES_PATH
    if not path.is_file():
        raise RulesError(f"alert rules file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
    return parse_rules(data, str(path))


__all__ = ["DEFAULT_RULES_PATH", "RulesError", "RulesFile", "RuleConfig", "load_rules", "parse_rules", "TOPIC_LABELS"]
