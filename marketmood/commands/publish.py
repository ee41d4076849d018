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
from marketmood.runtime import sigterm_as_interrupt
from marketmood.settings import Settings, check_bootstrap, get_settings
from streams.broker import find_running
from streams.publisher import Delivery, LiveClock, PublishError, close_producer, make_producer, publish
from streams.sources import Record, check_run_id, detect_format, in_run, read_records, record_time, run_id, since
from streams.sources import retime as retimed
from streams.topics import ensure_topics


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
    """``now`` (to the second: a retimed replay is named by its start second, so two started within one second
    are one run with the same times, not two runs whose ids collide) or an ISO-8601 time (UTC when it has no zone)."""
    if value is None:
        return None
    if value.strip().lower() == "now":
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'now' or an ISO-8601 time such as 2016-03-01T00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _run_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--run-id``, checked here: it ends every id of the run, so a bad one is a usage error, not dead letters."""
    if value is None:
        return None
    try:
        return check_run_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _resume_hint(last: Record | None, run: str | None = None, speed: float = 1.0) -> str:
    """How to go on after an interruption: ``--start-at`` the (original) time of the last record sent. Records
    of that time go again, which the worker's idempotent writes absorb (the same id is stored once).

    A retimed replay resumes as the same run on the same time mapping: ``--retime`` the last record's new time
    (the first record resent is then mapped onto it, later ones keep their spacing) and ``--run-id``. With
    ``--retime now`` the resent records would be a new run (stored twice), with the run id alone they would
    differ in time from their stored copies (dead-lettered as conflicting)."""
    if not isinstance(last, dict):
        return ""
    original = {"published_at": last.get("original_published_at", last.get("published_at"))}
    moment = record_time(original)
    if moment is None:
        return ""
    hint = f"; to resume, rerun with --start-at {moment.isoformat()}"
    if run is not None and "original_published_at" in last:
        hint += f" --retime {last['published_at']} --run-id {run}" + (f" --speed {speed:g}" if speed != 1.0 else "")
    return hint


@click.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=FiniteFloatRange(0), default=50.0, show_default=True,
              help="Messages per second; 0 = as fast as possible.")
@click.option("--limit", type=click.IntRange(1), help="Stop after N messages.")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "reuters", "stocknet", "csv"]),
              default="auto", show_default=True, help="Input format; auto = from the extension and CSV header.")
@click.option("--lang", help="Only messages in this language (e.g. en for the tweet stream); messages that "
                             "name no language are kept.")
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
@click.option("--run-id", "run", callback=_run_id, metavar="RUN",
              help="With --retime: the run the replayed ids belong to (each id becomes ID@RUN); the same run "
                   "replayed again is stored once, another run is stored beside it "
                   "[default: the --retime moment, UTC, to the second, e.g. 20261207175014].")
def publish_command(file: Path, rate: float, limit: int | None, fmt: str, lang: str | None, topic: str | None,
                    bootstrap: str | None, retime: datetime | None, speed: float, start_at: datetime | None,
                    run: str | None) -> None:
    """Replay FILE (JSONL or CSV, optionally .gz) into news.raw with a progress bar.

    Understands the Reuters stream (dates only: articles are spread over each day deterministically and
    flagged with "time_precision": "day" and the Kafka header time-precision: day) and the StockNet tweet
    stream of the shared data folder, and any JSONL/CSV in the news.raw contract. With --retime now
    --speed 24, history replays onto the present as a live stream (original time kept in
    original_published_at), so dashboards, report and alerts show real headlines arriving. A retimed replay is
    a run: its ids are ID@RUN (the worker keeps the first content of an id, so a second replay under the file's
    own ids was dead-lettered as conflicting duplicates); repeating a run is absorbed, a new run is stored.

    Counts are broker acknowledgements. Ctrl-C delivers what was sent, prints how many and the --start-at
    that resumes the replay, and exits 130; a broker that goes away stops the replay within about 30 s (exit 1).
    """

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        resolved_fmt = detect_format(file) if fmt == "auto" else fmt
    except (ValueError, OSError) as exc:  # unknown extension/columns, not UTF-8, not gzip
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    if speed != 1.0 and retime is None:
        raise click.UsageError("--speed needs --retime (e.g. --retime now --speed 24)")
    if run is not None and retime is None:
        raise click.UsageError("--run-id needs --retime: a plain replay keeps the file's ids (and times)")
    records = read_records(file, fmt=resolved_fmt, lang=lang)
    if start_at is not None:
        records = since(records, start_at)
    if retime is not None:
        run = run or run_id(retime)
        records = in_run(retimed(records, start=retime, speed=speed), run)

    resolved_bootstrap = _resolve_bootstrap(settings, bootstrap)
    target = topic or settings.topics.raw
    try:
        if target == settings.topics.raw:  # a publish before any worker: else the broker auto-creates news.raw
            ensure_topics(resolved_bootstrap, settings.topics)  # with its default partitions, kept forever after
        producer = make_producer(resolved_bootstrap)
    except KafkaError as exc:
        raise click.ClickException(f"cannot reach Kafka at {resolved_bootstrap}: {exc}") from None
    delivery = Delivery()  # the counts reported on every exit are acknowledgements, read after the producer closed
    failure: str | None = None
    interrupted = False
    try:
        with sigterm_as_interrupt(), tqdm(total=limit, unit="msg", desc=f"-> {target}") as bar:
            publish(records, producer=producer, topic=target, rate=rate, limit=limit,
                    on_sent=lambda _n: bar.update(1), live=LiveClock() if retime is not None else None,
                    delivery=delivery)
    except PublishError as exc:  # its message has the counts
        raise click.ClickException(f"publishing to {target}: {exc}") from None
    except KafkaError as exc:  # e.g. the topic does not exist (a broker that does not auto-create), a record too big
        failure = f"publishing to {target}: {type(exc).__name__}: {exc}"
    except (ValueError, KeyError, TypeError, csv.Error, EOFError, OSError) as exc:  # malformed row, damaged file
        failure = f"cannot read {file} ({type(exc).__name__}: {exc})"
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: deliver what was sent, say how far it got and how to go on, exit 130
        interrupted = True
    finally:
        close_producer(producer, 10)
    if interrupted:
        hint = _resume_hint(delivery.last_sent, run, speed) if delivery.acknowledged == delivery.sent else ""
        click.echo(f"interrupted: {delivery.acknowledged} of {delivery.sent} messages sent to {target} were "
                   f"acknowledged{hint}", err=True)
        raise click.exceptions.Exit(130)
    if failure is not None:
        raise click.ClickException(f"{failure}; {delivery.acknowledged} of {delivery.sent} messages sent were "
                                   "acknowledged by the broker")
    click.echo(f"published {delivery.acknowledged} messages to {target}"
               + (f" as run {run} (ids ID@{run})" if run is not None else ""))


COMMANDS = [publish_command]
