"""``marketmood report``: what an analyst sees in Grafana, as PNG charts and one HTML page (no Grafana needed)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click
from sqlalchemy import exc as sa_exc

from marketmood.dashboards.macros import (
    MacroError,
    as_stored,
    is_unknown_time_zone,
    parse_interval,
    time_zone_problem,
)
from marketmood.report.panels import Selection, load
from marketmood.runtime import database_engine
from marketmood.settings import get_settings
from models.labels import UnknownLabelError
from storage import dashboards as sql


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> object:
    try:
        return parse_interval(value)
    except MacroError as exc:  # no unit, or too large for a timedelta
        raise click.BadParameter(str(exc)) from None


def _unwritable(out_dir: Path, exc: OSError) -> click.ClickException:
    """Permissions, a read-only disk, a file in the way: one line naming the folder, not a traceback."""
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(out_dir) else ""
    return click.ClickException(f"cannot write the report to {out_dir}{where}: {exc.strerror or exc}")


@click.command("report")
@click.option("--since", default="7d", show_default=True, callback=_duration,
              help="How far back from now the report reaches (e.g. 7d, 36h).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write index.html and the PNG charts to (created if missing; a previous report there is "
                   "replaced, any other index.html is left alone and the command stops).")
@click.option("--topic", "topics", multiple=True, help="Only this topic (repeatable) [default: all].")
@click.option("--ticker", "tickers", multiple=True, help="Only articles mentioning this ticker (repeatable) [default: all].")
@click.option("--source", "sources", multiple=True, help="Only this publisher (repeatable) [default: all].")
@click.option("--tz", default=sql.TIME_ZONES[0], show_default=True,
              help="Market time zone: buckets start at its local midnight.")
@click.option("--min-articles", type=click.IntRange(1), default=sql.DEFAULT_MIN_ARTICLES, show_default=True,
              help="Buckets with fewer novel articles show no mean and no band.")
@click.option("--smoothing", type=click.IntRange(1), default=sql.DEFAULT_SPAN, show_default=True,
              help="EMA span in buckets (1 = raw bucket means).")
def report_command(since, out_dir: Path, topics: tuple[str, ...], tickers: tuple[str, ...],  # type: ignore[no-untyped-def]
                   sources: tuple[str, ...], tz: str, min_articles: int, smoothing: int) -> None:
    """Render the "News sentiment" dashboard's panels from the same SQL to PNG files plus one index.html.

    Uses the configured database (the embedded one when MARKETMOOD_DATABASE_URL is unset), e.g. after
    `marketmood demo`, so a laptop without Grafana sees what an analyst sees.
    """
    from marketmood.report.render import previous_report, write  # lazy: matplotlib costs ~0.5 s at CLI start-up

    if (problem := time_zone_problem(tz)) is not None:
        raise click.BadParameter(problem, param_hint="--tz")
    try:  # spelled as stored (canonical topics, upper-case tickers)
        topics = tuple(as_stored("topic", topics))
    except UnknownLabelError as exc:
        raise click.BadParameter(str(exc), param_hint="--topic") from None
    tickers = tuple(as_stored("ticker", tickers))
    try:  # before the database starts: a folder that cannot be made was a traceback after the queries
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(out_dir, exc) from None
    try:  # `--out .` in a website's folder silently replaced its index.html
        previous = previous_report(out_dir)
    except OSError as exc:
        raise _unwritable(out_dir, exc) from None
    if previous is False:
        raise click.ClickException(f"{out_dir / 'index.html'} is not a MarketMood report: not overwriting it "
                                   "(choose another --out folder)")
    t_to = datetime.now(timezone.utc)
    try:
        t_from = t_to - since
    except OverflowError:  # --since 800000d: before the year 1 (a traceback before)
        raise click.BadParameter(f"{since.days}d reaches back before the year 1", param_hint="--since") from None
    selection = Selection(topics=topics, tickers=tickers, sources=sources, tz=tz, min_articles=min_articles,
                          smoothing=smoothing)
    with database_engine(get_settings()) as engine, engine.connect() as conn:
        try:
            data = load(conn, t_from, t_to, selection)
        except sa_exc.DataError as exc:
            if is_unknown_time_zone(exc):
                raise click.BadParameter(f"{tz!r} is not a time zone this database knows", param_hint="--tz") from None
            raise
    try:
        rendered = write(data, out_dir)
    except OSError as exc:
        raise _unwritable(out_dir, exc) from None
    empty = [p.title for p in rendered if not p.rows]
    click.echo(f"{'replaced the previous report: ' if previous else 'wrote '}{out_dir / 'index.html'} "
               f"({sum(1 for p in rendered if p.image)} charts, {len(rendered)} panels)")
    if empty:
        click.echo("no data in this range: " + ", ".join(empty))


COMMANDS = [report_command]
