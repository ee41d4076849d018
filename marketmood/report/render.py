"""Draw the dashboard's panels to PNG (matplotlib) and put them on one HTML page.

Time series become charts (alert regions coloured by severity and model changes drawn as in Grafana; the
index charts get the zero line and the fixed +-0.2 thresholds); tables become HTML tables with the
headline links. A panel without data says so on the page instead of showing an empty frame.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from marketmood.dashboards.definitions import SEVERITY_COLORS  # noqa: E402
from marketmood.report.panels import DashboardData, PanelData  # noqa: E402
from storage import dashboards as sql  # noqa: E402

TABLE_ROWS = 25
GENERATOR = "marketmood report"  # in the page's <meta name=generator>: how a later run knows the page is a report
_OLD_REPORT_TITLE = "<title>MarketMood report</title>"  # pages written before the meta tag
INDEX_PANELS = {"Sentiment index (selection)", "Sentiment index per topic", "Sentiment index per ticker"}
_SEVERITY_RGB = {"red": "#d62728", "orange": "#ff7f0e", "yellow": "#e3b400", "blue": "#1f77b4"}


@dataclass(frozen=True, slots=True)
class RenderedPanel:
    title: str
    kind: str
    rows: int
    image: str | None  # file name under the output folder


def _num(value: Any) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, (int, float, Decimal)) else None


def _series(panel: PanelData) -> dict[str, tuple[list[datetime], list[float | None]]]:
    """Grafana's reading of a time-series frame: a ``metric`` column names the series, else each column."""
    out: dict[str, tuple[list[datetime], list[float | None]]] = {}
    if "metric" in panel.columns:
        for r in panel.rows:
            xs, ys = out.setdefault(str(r["metric"]), ([], []))
            xs.append(r["time"])
            ys.append(_num(r["value"]))
        return out
    for column in panel.columns:
        if column != "time":
            out[column] = ([r["time"] for r in panel.rows], [_num(r[column]) for r in panel.rows])
    return out


def _has_data(panel: PanelData) -> bool:
    if panel.kind != "timeseries":
        return bool(panel.rows)
    return any(v is not None for _, ys in _series(panel).values() for v in ys)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _draw_annotations(ax: Any, data: DashboardData) -> None:
    for note in data.annotations:
        if note.kind == "model":
            ax.axvline(note.start, color="purple", lw=1, ls=":", alpha=0.8)
            continue
        color = _SEVERITY_RGB[SEVERITY_COLORS[note.kind]]
        end = note.end if note.end is not None and note.end > note.start else data.t_to
        ax.axvspan(max(note.start, data.t_from), min(end, data.t_to), color=color, alpha=0.12, lw=0)


def line_points(title: str, xs: list[datetime], ys: list[float | None]) -> tuple[list[datetime], list[float]]:
    """What one line of a panel draws, as the dashboard does: an index (EMA) panel connects across empty buckets
    (Grafana's spanNulls: the EMA carries its value), any other panel keeps a gap where the SQL hides a bucket
    under ``min_articles`` (the negative share): a line across it would show a value the panel refuses to."""
    if title in INDEX_PANELS:
        points = [(x, y) for x, y in zip(xs, ys) if y is not None]
        return [p[0] for p in points], [p[1] for p in points]
    return list(xs), [float("nan") if y is None else y for y in ys]


def _plot_timeseries(panel: PanelData, data: DashboardData, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 3.6), dpi=100)
    series = _series(panel)
    if panel.title == "Sentiment index (selection)":
        xs, lower = series.pop("lower 95%")
        _, upper = series.pop("upper 95%")
        _, counts = series.pop("articles")
        band = [(x, lo, hi) for x, lo, hi in zip(xs, lower, upper) if lo is not None and hi is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color="tab:blue",
                            alpha=0.18, lw=0, label="95% band", step="mid")
        ax2 = ax.twinx()
        ax2.bar(xs, [c or 0 for c in counts], width=data.interval.total_seconds() / 86400 * 0.9, color="grey",
                alpha=0.25, label="articles")
        ax2.set_ylabel("articles / bucket")
        ax2.set_ylim(0, max([c or 0 for c in counts] + [1]) * 4)  # bars in the bottom quarter, under the band
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        for name, (xs_, ys) in series.items():
            style = {"marker": "o", "ls": "none", "ms": 3} if name == "bucket mean" else {"lw": 2}
            ax.plot(xs_, [float("nan") if y is None else y for y in ys], label=name, **style)
    elif panel.title.startswith("Article volume"):
        bottom = None
        for name, (xs_, ys) in series.items():
            values = [y or 0 for y in ys]
            ax.bar(xs_, values, width=data.interval.total_seconds() / 86400 * 0.9, bottom=bottom, label=name)
            bottom = values if bottom is None else [a + b for a, b in zip(bottom, values)]
        ax.set_ylabel("articles per hour")
    else:
        for name, (xs_, ys) in sorted(series.items()):
            ax.plot(*line_points(panel.title, xs_, ys), label=name, lw=1.4, marker="o", ms=2.5)
    if panel.title in INDEX_PANELS:
        ax.set_ylim(-1, 1)
        ax.axhline(0, color="#8e8e8e", lw=1)
        ax.axhline(-sql.THRESHOLD, color="red", lw=1, ls="--")
        ax.axhline(sql.THRESHOLD, color="green", lw=1, ls="--")
        ax.set_ylabel("p(pos) - p(neg)")
    if panel.unit == "percentunit":
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    _draw_annotations(ax, data)
    ax.set_xlim(data.t_from, data.t_to)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_title(panel.title, loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.06 if panel.title.startswith("Sentiment index (") else 1.01, 1),
                  fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cell(column: str, value: Any, row: dict[str, Any]) -> str:
    if value is None:
        return ""
    if column == "headline" and row.get("link"):
        return f'<a href="{html.escape(str(row["link"]))}">{html.escape(str(value))}</a>'
    if column == "top_headline" and row.get("top_headline_url"):
        return f'<a href="{html.escape(str(row["top_headline_url"]))}">{html.escape(str(value))}</a>'
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, (float, Decimal)):
        return f"{float(value):.3f}"
    return html.escape(str(value))


_HIDDEN = {"link", "top_headline_url", "time"}


def _table_html(panel: PanelData) -> str:
    columns = [c for c in panel.columns if c not in _HIDDEN or (c == "time" and "local_time" not in panel.columns)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c, r.get(c), r)}</td>" for c in columns) + "</tr>"
        for r in panel.rows[:TABLE_ROWS]
    )
    more = f"<p class=note>{len(panel.rows) - TABLE_ROWS} more rows not shown.</p>" if len(panel.rows) > TABLE_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h2{margin-top:28px;font-size:17px} p.desc{color:#555;font-size:13px;margin:4px 0 8px}
table{border-collapse:collapse;font-size:12px;width:100%} th,td{border-bottom:1px solid #ddd;padding:3px 6px;
text-align:left} th{background:#f3f3f3} img{max-width:100%} p.note{color:#a00;font-size:13px}"""


def previous_report(out_dir: Path) -> bool | None:
    """Is there an ``index.html`` in ``out_dir``, and did this command write it? None: none there; True: a report
    (overwritten, saying so); False: someone else's page, which the command refuses to overwrite."""
    page = out_dir / "index.html"
    if not page.is_file():
        return None
    with page.open(encoding="utf-8", errors="replace") as fh:
        head = fh.read(4096)
    return f'<meta name=generator content="{GENERATOR}">' in head or _OLD_REPORT_TITLE in head


def chart_file(panel: PanelData) -> str:
    return f"{panel.panel_id:02d}-{_slug(panel.title)}.png"


def write(data: DashboardData, out_dir: Path) -> list[RenderedPanel]:
    """PNG per time-series panel plus ``index.html`` with every panel; returns what was rendered.

    A chart an earlier report left for a panel that has no data now is removed: next to the new page it showed
    another range's data as if current.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered: list[RenderedPanel] = []
    sections: list[str] = []
    for panel in data.panels:
        has = _has_data(panel)
        image = None
        section = f"<h2>{html.escape(panel.title)}</h2><p class=desc>{html.escape(panel.description)}</p>"
        if not has:
            section += "<p class=note>No data in this range.</p>"
        elif panel.kind == "timeseries":
            image = chart_file(panel)
            _plot_timeseries(panel, data, out_dir / image)
            section += f'<img src="{image}" alt="{html.escape(panel.title)}">'
        else:
            section += _table_html(panel)
        sections.append(section)
        rendered.append(RenderedPanel(panel.title, panel.kind, len(panel.rows), image))
        if image is None and panel.kind == "timeseries":
            (out_dir / chart_file(panel)).unlink(missing_ok=True)
    sel = data.selection
    chosen = ", ".join(f"{name}: {', '.join(values)}" for name, values in
                       (("topics", sel.topics), ("tickers", sel.tickers), ("sources", sel.sources)) if values)
    legend = " ".join(f'<span style="color:{_SEVERITY_RGB[c]}">&#9632; {s}</span>' for s, c in SEVERITY_COLORS.items())
    page = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f'<meta name=generator content="{GENERATOR}"><title>MarketMood report</title>'
        f"<style>{_CSS}</style></head><body><h1>MarketMood — News sentiment</h1>"
        f"<p>{data.t_from:%Y-%m-%d %H:%M} to {data.t_to:%Y-%m-%d %H:%M} UTC, buckets of "
        f"{data.interval.total_seconds() / 3600:g} h in {html.escape(sel.tz)}; min {sel.min_articles} articles per "
        f"bucket, EMA span {sel.smoothing}. {html.escape(chosen) or 'All topics, tickers and sources.'}</p>"
        f"<p class=desc>Shaded regions: alerts ({legend}); dotted purple lines: model changes. Same SQL as the "
        "Grafana dashboard (storage/dashboards.py), current model's scores only.</p>"
        + "".join(sections) + "</body></html>"
    )
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    return rendered
