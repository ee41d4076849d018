"""What the alert service needs to know, as a plain dataclass: ``marketmood/`` maps its settings onto it, so
``alerts`` never reads the application's settings itself (and tests build one directly)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Cadence, windows, watermark and delivery policy of one alert service."""

    rules_path: Path | None = None
    evaluate_interval_s: float = 30.0
    outbox_poll_interval_s: float = 2.0
    window_s: int = 300
    # Wall-clock wait after a window ends before judging it (a floor; the watermark is the real gate).
    late_grace_s: float = 30.0
    # Judge a window only once the workers' committed event-time watermark is past its end plus this.
    allowed_lateness_s: float = 60.0
    # Kafka topic whose ingest progress is the watermark (news.raw); None = no watermark, wall clock only
    # (callers that write scores directly, e.g. unit tests and replays).
    watermark_topic: str | None = None
    max_catchup_windows: int = 288
    delivery_timeout_s: float = 5.0
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    max_attempts: int = 0
    # A ``sending`` claim older than this belongs to a dead sender (must exceed one attempt's timeout).
    claim_timeout_s: float = 60.0
    plots_dir: Path | None = None
    runbook_url: str | None = None
    grafana_url: str | None = None  # base URL of Grafana, for the per-scope panel link in notifications
    grafana_dashboard_uid: str = "marketmood-sentiment"

    @classmethod
    def coerce(cls, value: Any) -> AlertConfig:
        """An ``AlertConfig`` from itself, None (defaults) or any object with some of these attributes (the
        demo still hands over its settings section); unknown attributes are ignored."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        return cls(**{f.name: getattr(value, f.name) for f in fields(cls) if hasattr(value, f.name)})
