"""Evidence plot: negative share per window vs the baseline, with the alert start marked (PNG bytes)."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def evidence_png(alert: dict[str, Any]) -> bytes | None:
    """Render the alert's evidence series; None when there is no series to draw."""
    ev = alert.get("evidence") or {}
    series = ev.get("series") or []
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [datetime.fromtimestamp(int(t), tz=timezone.utc) for t, _, _ in series]
    shares = [neg / n if n else float("nan") for _, neg, n in series]
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    ax.plot(times, shares, marker="o", ms=3, label="negative share per window")
    if ev.get("baseline_share") is not None:
        ax.axhline(ev["baseline_share"], color="grey", ls="--", label="baseline")
    started = ev.get("window_end")
    if started:
        ax.axvline(datetime.fromtimestamp(int(started), tz=timezone.utc), color="red", lw=1, label="fired")
    ax.set_ylim(0, 1)
    ax.set_title(f"{alert.get('scope_type')} {alert.get('scope')}: negative share", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_filename(alert: dict[str, Any]) -> str:
    """``alert-<id>-<scope type>-<scope>.png`` with the scope reduced to a safe slug."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{alert.get('scope_type')}-{alert.get('scope')}".lower()).strip("-")
    return f"alert-{alert.get('id')}-{slug or 'scope'}.png"


def save_evidence_png(alert: dict[str, Any], directory: Path) -> Path | None:
    """Write the alert's evidence plot into ``directory`` (created if missing); None when there is nothing to draw."""
    png = evidence_png(alert)
    if png is None:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / plot_filename(alert)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(png)
    tmp.replace(path)  # a reader never sees half a file
    return path
