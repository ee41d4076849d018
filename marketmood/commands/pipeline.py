"""``marketmood worker``, ``marketmood publish`` and ``marketmood demo``: the stream pipeline's commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from marketmood.settings import Settings, get_settings
from models.prediction import ClassifierProvider


@contextlib.contextmanager
def classifier_provider(settings: Settings, database_url: str) -> Iterator[ClassifierProvider]:
    """The classifier provider the worker calls once per batch.

    With ``model.path`` set (MARKETMOOD_MODEL__PATH) that artifact is pinned: a static provider, no hot
    reload. Otherwise the registry-backed provider follows the ``active`` alias (registering the bundled
    model on an empty registry) and swaps to a newly promoted model between batches.
    """
    if settings.model.path is not None:
        from models.engine import engine_from_settings
        from models.prediction import StaticProvider

        yield StaticProvider(engine_from_settings(settings))
        return
    from storage.db import make_engine
    from streams.hot_reload import RegistryProvider

    engine = make_engine(database_url)
    provider = RegistryProvider.from_settings(settings, engine).start()
    try:
        yield provider
    finally:
        provider.stop()
        engine.dispose()


@click.command("worker")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Prometheus /metrics port [default: settings worker.web_port]; 0 disables.")
def worker_command(metrics_port: int | None) -> None:
    """Consume news.raw, score micro-batches, store them in PostgreSQL and publish news.scored.

    With MARKETMOOD_KAFKA_BOOTSTRAP / MARKETMOOD_DATABASE_URL unset, an embedded broker and database are
    started (and stopped on exit); `marketmood publish` finds that broker by itself.
    """
    from marketmood.logs import configure_logging
    from marketmood.runtime import services
    from streams.worker import run_worker

    settings = get_settings()
    if metrics_port is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"web_port": metrics_port})}
        )
    configure_logging(settings.log_level, settings.log_format)
    with services(settings) as svc, classifier_provider(settings, svc.database_url) as provider:
        # the model is loaded before the worker joins the group, so no partition waits on a cold start
        run_worker(settings, bootstrap=svc.kafka_bootstrap, database_url=svc.database_url, provider=provider)




def _resolve_bootstrap(settings: Settings, bootstrap: str | None) -> str:
    from streams.broker import find_running

    resolved = bootstrap or settings.kafka_bootstrap or find_running(settings.home / "kafka")
    if resolved is None:
        raise click.UsageError(
            "no Kafka broker: set MARKETMOOD_KAFKA_BOOTSTRAP (or --bootstrap), or start `marketmood worker` "
            "with no broker configured so that its embedded broker can be found"
        )
    return resolved


@click.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=click.FloatRange(0), default=50.0, show_default=True,
              help="Messages per second; 0 = as fast as possible.")
@click.option("--limit", type=click.IntRange(1), help="Stop after N messages.")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "reuters", "stocknet", "csv"]),
              default="auto", show_default=True)
@click.option("--lang", help="Only messages in this language (e.g. en for the tweet stream).")
@click.option("--topic", help="Target topic [default: settings topics.raw].")
@click.option("--bootstrap", help="Kafka bootstrap [default: settings, else a running embedded broker].")
def publish_command(file: Path, rate: float, limit: int | None, fmt: str, lang: str | None, topic: str | None,
                    bootstrap: str | None) -> None:
    """Replay FILE (JSONL or CSV, optionally .gz) into news.raw with a progress bar.

    Understands the Reuters stream (dates only: articles are spread over each day deterministically) and
    the StockNet tweet stream of the shared data folder, and any JSONL/CSV in the news.raw contract.
    """
    import csv

    from tqdm import tqdm

    from marketmood.logs import configure_logging
    from streams.publisher import make_producer, publish
    from streams.sources import detect_format, read_records

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        resolved_fmt = detect_format(file) if fmt == "auto" else fmt
    except (ValueError, OSError) as exc:  # unknown extension/columns, not UTF-8, not gzip
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    records = read_records(file, fmt=resolved_fmt, lang=lang)
    from kafka.errors import KafkaError

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
            sent = publish(records, producer=producer, topic=target, rate=rate, limit=limit, on_sent=progress)
    except (ValueError, KeyError, TypeError, csv.Error, EOFError, OSError) as exc:  # malformed row, damaged file
        raise click.ClickException(
            f"cannot read {file} ({type(exc).__name__}: {exc}); {sent} messages were sent before it") from None
    finally:
        producer.close(10)
    click.echo(f"published {sent} messages to {target}")


def _phases(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(x < 0 for x in parts) or parts[1] <= 0:
        raise click.BadParameter("expected CALM,BURST,RECOVERY seconds, e.g. 40,30,50 (burst > 0)")
    return parts  # type: ignore[return-value]


@click.command("demo")
@click.option("--rate", type=click.FloatRange(1, 500), default=10.0, show_default=True, help="Articles per second.")
@click.option("--phases", default="40,30,50", show_default=True, callback=_phases, metavar="CALM,BURST,RECOVERY",
              help="Seconds of calm news (the alert baseline), of the negative burst, and of calm news after it.")
@click.option("--articles", type=click.IntRange(1), help="Stop the feed after N articles [default: rate x phases].")
@click.option("--duration", type=click.FloatRange(1), help="Stop after this many seconds even if not done.")
@click.option("--seed", type=int, default=7, show_default=True)
def demo_command(rate: float, phases: tuple[float, float, float], articles: int | None, duration: float | None,
                 seed: int) -> None:
    """Run the whole pipeline locally on generated news: a live per-topic sentiment table and spike alerts.

    Starts an embedded broker and PostgreSQL (unless configured), the worker, the alert service (10-s windows,
    alerts/rules.demo.yaml unless MARKETMOOD_ALERTS__RULES_PATH is set) and a feed of generated headlines:
    calm, then a negative burst about one company, then calm again, so an alert fires and resolves (about
    two minutes by default). Ctrl-C stops everything cleanly; a summary goes to <home>/demo-summary.json.
    """
    from marketmood.logs import configure_logging
    from streams.demo import run_demo

    settings = get_settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level, settings.log_format)
    run_demo(settings, rate=rate, phases=phases, articles=articles, duration=duration, seed=seed)


COMMANDS = [worker_command, publish_command, demo_command]
