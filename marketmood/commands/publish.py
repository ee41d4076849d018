"""``marketmood publish``: replay a news file into news.raw (scrapers' stand-in for tests, demos and backfills)."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

import click
from kafka.errors import KafkaError
from tqdm import tqdm

from marketmood.commands.params import FiniteFloatRange
from marketmood.logs import configure_logging
from marketmood.settings import Settings, check_bootstrap, get_settings
from streams.broker import find_running
from streams.publisher import LiveClock, PublishError, make_producer, publish
from streams.sources import detect_format, read_records, since
from streams.sources import retime as retimed


def _bootstrap(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return None
    try:
        return check_bootstrap(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _resolve_bootstrap(settings: Settings, bootstrap: str | None) -> str:
    resolved = bootstrap or settings.kafka_bootstrap or find_running(settings.home / "kafka")
    if resolved is None:
        raise click.UsageError(
            "no Kafka broker: set MARKETMOOD_KAFKA_BOOTSTRAP (or --bootstrap), or start `marketmood worker` "
            "with no broker configured so that its embedded broker can be found"
        )
    return resolved


def _moment(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``now`` or an ISO-8601 time (UTC when it has no zone)."""
    if value is None:
        return None
    if value.strip().lower() == "now":
        return datetime.now(timezone.utc)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'now' or an ISO-8601 time such as 2016-03-01T00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@click.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=FiniteFloatRange(0), default=50.0, show_default=True,
              help="Messages per second; 0 = as fast as possible.")
@click.option("--limit", type=click.IntRange(1), help="Stop after N messages.")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "reuters", "stocknet", "csv"]),
              default="auto", show_default=True, help="Input format; auto = from the extension and CSV header.")
@click.option("--lang", help="Only messages in this language (e.g. en for the tweet stream).")
@click.option("--topic", help="Target topic [default: settings topics.raw].")
@click.option("--bootstrap", callback=_bootstrap, metavar="HOST:PORT[,HOST:PORT]",
              help="Kafka bootstrap [default: settings, else a running embedded broker].")
@click.option("--retime", callback=_moment, metavar="now|TIME",
              help="Replay history as a live stream: the first record's time becomes this moment, later ones keep "
                   "their spacing (divided by --speed) and go out when their new time comes; --rate is ignored.")
@click.option("--speed", type=FiniteFloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --retime: how much faster than history (24 = one day of news per hour).")
@click.option("--start-at", callback=_moment, metavar="TIME",
              help="Skip records published before this time (e.g. 2016-03-01 to replay from there).")
def publish_command(file: Path, rate: float, limit: int | None, fmt: str, lang: str | None, topic: str | None,
                    bootstrap: str | None, retime: datetime | None, speed: float, start_at: datetime | None) -> None:
    """Replay FILE (JSONL or CSV, optionally .gz) into news.raw with a progress bar.

    Understands the Reuters stream (dates only: articles are spread over each day deterministically and
    flagged with "time_precision": "day" and the Kafka header time-precision: day) and the StockNet tweet
    stream of the shared data folder, and any JSONL/CSV in the news.raw contract. With --retime now
    --speed 24, history replays onto the present as a live stream (original time kept in
    original_published_at), so dashboards, report and alerts show real headlines arriving.
    """

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        resolved_fmt = detect_format(file) if fmt == "auto" else fmt
    except (ValueError, OSError) as exc:  # unknown extension/columns, not UTF-8, not gzip
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    if speed != 1.0 and retime is None:
        raise click.UsageError("--speed needs --retime (e.g. --retime now --speed 24)")
    records = read_records(file, fmt=resolved_fmt, lang=lang)
    if start_at is not None:
        records = since(records, start_at)
    if retime is not None:
        records = retimed(records, start=retime, speed=speed)

    resolved_bootstrap = _resolve_bootstrap(settings, bootstrap)
    try:
        producer = make_producer(resolved_bootstrap)
    except KafkaError as exc:
        raise click.ClickException(f"cannot reach Kafka at {resolved_bootstrap}: {exc}") from None
    target = topic or settings.topics.raw
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent = n
        bar.update(1)

    try:
        with tqdm(total=limit, unit="msg", desc=f"-> {target}") as bar:
            sent = publish(records, producer=producer, topic=target, rate=rate, limit=limit, on_sent=progress,
                           live=LiveClock() if retime is not None else None)
    except PublishError as exc:
        raise click.ClickException(f"publishing to {target}: {exc}") from None
    except KafkaError as exc:  # e.g. the topic does not exist (a broker that does not auto-create), a record too big
        raise click.ClickException(f"publishing to {target}: {type(exc).__name__}: {exc}; {sent} messages were "
                                   "sent before it") from None
    except (ValueError, KeyError, TypeError, csv.Error, EOFError, OSError) as exc:  # malformed row, damaged file
        raise click.ClickException(
            f"cannot read {file} ({type(exc).__name__}: {exc}); {sent} messages were sent before it") from None
    finally:
        producer.close(10)
    click.echo(f"published {sent} messages to {target}")


COMMANDS = [publish_command]
