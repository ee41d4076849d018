"""``marketmood worker`` and ``marketmood demo``: the stream pipeline's commands."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from marketmood.commands.params import FiniteFloatRange
from marketmood.demo import run_demo
from marketmood.engines import classifier_provider
from marketmood.logs import configure_logging
from marketmood.pipeline import run_worker
from marketmood.runtime import services, sigterm_as_interrupt
from marketmood.settings import get_settings


@click.command("worker")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Prometheus /metrics port [default: settings worker.web_port]; 0 disables.")
def worker_command(metrics_port: int | None) -> None:
    """Consume news.raw, score micro-batches, store them in PostgreSQL and publish news.scored.

    With MARKETMOOD_KAFKA_BOOTSTRAP / MARKETMOOD_DATABASE_URL unset, an embedded broker and database are
    started (and stopped on exit); `marketmood publish` finds that broker by itself.
    """
    settings = get_settings()
    if metrics_port is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"web_port": metrics_port})}
        )
    configure_logging(settings.log_level, settings.log_format)
    # Until the worker's own signal handlers take over, SIGTERM unwinds like Ctrl-C: it used to kill the process
    # while the embedded broker and database started (or the model loaded), leaving both running.
    with sigterm_as_interrupt(), services(settings) as svc, \
            classifier_provider(settings, svc.database_url) as provider:
        # the model is loaded before the worker joins the group, so no partition waits on a cold start
        run_worker(settings, bootstrap=svc.kafka_bootstrap, database_url=svc.database_url, provider=provider)




MAX_PHASE_S = 86_400.0  # a day per phase: the demo's scenario is minutes long


def _phases(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in value.split(","))
    except ValueError:
        parts = ()
    # NaN passes every comparison and inf/1e308 overflowed the article count: both were a traceback
    if len(parts) != 3 or not all(0 <= x <= MAX_PHASE_S for x in parts) or parts[1] <= 0:
        raise click.BadParameter("expected CALM,BURST,RECOVERY seconds, e.g. 40,30,50 (burst > 0, each at most "
                                 f"{MAX_PHASE_S:.0f})")
    return parts  # type: ignore[return-value]


@click.command("demo")
@click.option("--rate", type=FiniteFloatRange(1, 500), default=10.0, show_default=True, help="Articles per second.")
@click.option("--phases", default="40,30,50", show_default=True, callback=_phases, metavar="CALM,BURST,RECOVERY",
              help="Seconds of calm news (the alert baseline), of the negative burst, and of calm news after it.")
@click.option("--articles", type=click.IntRange(1), help="Stop the feed after N articles [default: rate x phases].")
@click.option("--duration", type=FiniteFloatRange(1), help="Stop after this many seconds even if not done.")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Seed of the generated news feed (same seed, same headlines and burst).")
@click.option("--data", "data", type=click.Choice(["generated", "reuters"]), default="generated", show_default=True,
              help="generated: news this project writes, with a negative burst; reuters: real Reuters headlines "
                   "from the data path (MARKETMOOD_DATA_PATH), retimed onto now.")
@click.option("--replay-from", type=click.DateTime(["%Y-%m-%d"]), default="2016-03-01", show_default=True,
              help="With --data reuters: the first day of history to replay.")
@click.option("--speed", type=FiniteFloatRange(min=1), default=60.0, show_default=True,
              help="With --data reuters: how many times faster than real time the history is replayed.")
def demo_command(rate: float, phases: tuple[float, float, float], articles: int | None, duration: float | None,
                 seed: int, data: str, replay_from: datetime, speed: float) -> None:
    """Run the whole pipeline locally on generated (or replayed Reuters) news: live sentiment table, spike alerts.

    Starts an embedded broker and PostgreSQL (unless configured), the worker, the alert service (10-s windows,
    alerts/rules.demo.yaml unless MARKETMOOD_ALERTS__RULES_PATH is set) and a feed of generated headlines:
    calm, then a negative burst about one company, then calm again, so an alert fires and resolves (about
    two minutes by default). With --data reuters the feed is real Reuters history from the data path, retimed
    onto now (--replay-from, --speed). Ctrl-C stops everything cleanly; a summary goes to
    <home>/demo-summary.json.
    """
    settings = get_settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level, settings.log_format)
    result = run_demo(settings, rate=rate, phases=phases, articles=articles, duration=duration, seed=seed, data=data,
                      replay_from=replay_from.replace(tzinfo=timezone.utc), speed=speed)
    code = result.get("worker_exit_code")
    if code not in (0, None):  # the worker crashed: the demo's numbers are not what it claims to show
        raise click.ClickException(f"the demo's worker exited with code {code}: see "
                                   f"{settings.home / 'demo-worker.log'}")


COMMANDS = [worker_command, demo_command]
