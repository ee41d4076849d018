"""``marketmood retrain``, ``models list|show|register|gate|promote|rollback|shadow``, ``feedback import|requests``,
``scheduler``."""

from __future__ import annotations

import csv
import getpass
import json
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from marketmood.logs import configure_logging
from marketmood.runtime import database_engine, sigterm_as_interrupt
from marketmood.settings import get_settings
from storage import labelling
from storage import registry as sql
from storage.feedback import insert_many, unknown_article_ids
from training.feedback_policy import validate_feedback
from training.registry import (
    RegistryError,
    ensure_champion,
    finish_shadow,
    promote,
    register_artifact,
    rollback,
    shadow_report,
)

if TYPE_CHECKING:
    from training.retrain import RetrainOutcome


def _setup_logging() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


def _who(user: str | None) -> str:
    return user or getpass.getuser()


# ---------------------------------------------------------------- retrain


@click.command("retrain")
@click.option("--by", "user", help="Who asked (kept in the alias history) [default: OS user].")
@click.option("--no-promote", is_flag=True, help="Register a passing challenger without promoting it.")
@click.option("--max-steps", type=click.IntRange(1), help="Cap optimizer steps (smoke runs).")
@click.option("--limit", "limit_per_dataset", type=click.IntRange(1), help="Use at most N rows per dataset.")
@click.option("--epochs", type=click.IntRange(1), help="Override settings retrain.epochs.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome (with the gate report) as JSON.")
def retrain_command(user: str | None, no_promote: bool, max_steps: int | None, limit_per_dataset: int | None,
                    epochs: int | None, as_json: bool) -> None:
    """Fine-tune a challenger on base data + feedback, gate it against the champion, register, promote.

    Exit code 0 when promoted/registered or skipped (another retrain holds the lock), 1 when the gate
    rejected the challenger.
    """
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.retrain import run_retrain

    _setup_logging()
    overrides = {k: v for k, v in {"max_steps": max_steps, "limit_per_dataset": limit_per_dataset,
                                   "epochs": epochs}.items() if v is not None}
    with database_engine(get_settings()) as engine:
        outcome = run_retrain(engine, get_settings(), by=_who(user), trigger="manual", train_overrides=overrides,
                              promote=False if no_promote else None)
    if as_json:
        click.echo(json.dumps({"status": outcome.status, "reason": outcome.reason, "version": outcome.version,
                               "champion": outcome.champion, "report": outcome.report}, indent=2, default=str))
    else:
        if outcome.report:
            click.echo(outcome.report["markdown"])
        click.echo(f"{outcome.status}: {outcome.version or '-'} ({outcome.reason})")
    sys.exit(1 if outcome.status in {"rejected", "failed"} else 0)


# ---------------------------------------------------------------- models


@click.group("models")
def models_group() -> None:
    """The model registry in PostgreSQL: versions, the active alias, promotion and rollback."""


@models_group.command("list")
def models_list() -> None:
    """Every version, newest first; '*' marks the active one."""

    with database_engine(get_settings()) as engine:
        ensure_champion(engine)
        with engine.connect() as conn:
            active = sql.get_alias(conn)
            versions = sql.list_versions(conn)
    click.echo(f"  {'version':<28} {'status':<10} {'created (UTC)':<20} {'parent':<28} mean dev macro-F1")
    for v in versions:
        mark = "*" if v["version"] == active else " "
        click.echo(f"{mark} {v['version']:<28} {v['status']:<10} {v['created_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{(v['parent_version'] or '-'):<28} {_mean_f1(v['metrics'])}")


def _mean_f1(metrics: dict[str, Any]) -> str:
    """Mean macro-F1 over the dev sets of the serving path, from an artifact's metrics.json."""
    scores = []
    for per_path in (metrics.get("dev") or {}).values():
        chosen = per_path.get("cpu_int8") or per_path.get("fp32") or {}
        if "macro_f1" in chosen:
            scores.append(chosen["macro_f1"])
    return f"{sum(scores) / len(scores):.4f}" if scores else "-"


@models_group.command("show")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the full record (metrics, config, report) as JSON.")
def models_show(version: str, as_json: bool) -> None:
    """VERSION's record: lineage, fingerprint, metrics and its promotion-gate report."""

    with database_engine(get_settings()) as engine, engine.connect() as conn:
        record = sql.get_version(conn, version)
        active = sql.get_alias(conn)
    if record is None:
        raise click.ClickException(f"unknown model version {version!r} (see `marketmood models list`)")
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    click.echo(f"version:      {record['version']}{'  (active)' if record['version'] == active else ''}")
    for key in ("status", "created_at", "parent_version", "base_encoder", "data_fingerprint", "artifact_sha256"):
        click.echo(f"{key + ':':<14}{record[key]}")
    click.echo(f"{'dev F1:':<14}{_mean_f1(record['metrics'])}")
    report = record.get("report")
    click.echo("")
    click.echo(report["markdown"] if report and "markdown" in report else "(no gate report: not a retrained version)")


@models_group.command("register")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--promote", "do_promote", is_flag=True,
              help="Gate it against the active model on the champion's dev split; promote (or shadow) if it passes.")
@click.option("--force", is_flag=True, help="Make it active without the gate (recorded as a forced promotion).")
@click.option("--by", "user", help="Who registers [default: OS user].")
def models_register(path: Path, do_promote: bool, force: bool, user: str | None) -> None:
    """Register a `marketmood train` output folder PATH in the registry (status candidate)."""
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.retrain import gate_existing

    settings = get_settings()
    with database_engine(settings) as engine:
        try:
            version = register_artifact(engine, path, status="candidate",
                                        slim=not settings.retrain.registry_include_weights)
        except Exception as exc:  # noqa: BLE001 - a bad folder or a duplicate version is a user error
            raise click.ClickException(f"cannot register {path}: {exc}") from None
        click.echo(f"registered {version} (candidate)")
        if force:
            previous = promote(engine, version, by=_who(user), reason="register --force (no gate)")
            click.echo(f"active: {previous or '-'} -> {version} (forced, no gate)")
        elif do_promote:
            try:
                outcome = gate_existing(engine, settings, version, path, by=_who(user))
            except RegistryError as exc:
                raise click.ClickException(str(exc)) from None
            _print_gate_outcome(outcome, version)


@models_group.command("gate")
@click.argument("version")
@click.option("--by", "user", help="Who asks (kept in the alias history if it is promoted) [default: OS user].")
def models_gate(version: str, user: str | None) -> None:
    """Run the promotion gate again on VERSION, a registered candidate, against the active model.

    For a `models register --promote` whose gate could not run (labeled sets or a guard slice unreadable, the
    database or a host lost mid-way): fix the cause, then gate the stored artifact with this command. It acts as
    `register --promote` does: shadow (or promote) when it passes, reject when it loses a vote. Refused for a
    version that is not a candidate and for a retrain's challenger (run `marketmood retrain` again).
    Exit code 1 when rejected or when the gate could not run.
    """
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.retrain import regate

    _setup_logging()
    settings = get_settings()
    with database_engine(settings) as engine:
        try:
            outcome = regate(engine, settings, version, by=_who(user))
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    _print_gate_outcome(outcome, version)


def _print_gate_outcome(outcome: RetrainOutcome, version: str) -> None:
    """The gate report and verdict of ``models register --promote`` / ``models gate``; exit 1 unless it passed."""
    click.echo(outcome.report["markdown"] if outcome.report else "")
    click.echo(f"{outcome.status}: {version} ({outcome.reason})")
    if outcome.status == "failed":
        click.echo(f"the gate did not run; {version} stays a candidate: when the cause is outside the artifact "
                   f"(data files, guard slices, the database), fix it and run `marketmood models gate {version}`; "
                   "a split the champion does not share is in the artifact itself: train it again on the champion's")
    if outcome.status in {"rejected", "failed"}:
        sys.exit(1)


@models_group.command("shadow")
@click.option("--promote", "do_finish", is_flag=True,
              help="Act on the verdict now: promote a ready shadow version, reject a failing one.")
@click.option("--force", is_flag=True, help="With --promote: promote the shadow version whatever the verdict.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--by", "user", help="Who acts [default: OS user].")
def models_shadow(do_finish: bool, force: bool, as_json: bool, user: str | None) -> None:
    """The shadow stage: agreement with the active model on the same articles, confidence, counts, period."""
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.scheduler import shadow_criteria_from

    settings = get_settings()
    criteria = shadow_criteria_from(settings)
    now = datetime.now(UTC)
    with database_engine(settings) as engine:
        report = (finish_shadow(engine, now=now, criteria=criteria, by=_who(user), force=force) if do_finish
                  else shadow_report(engine, now=now, criteria=criteria))
    if report is None:
        raise click.ClickException("no shadow version (a challenger that passes the gate is put on the `shadow` alias)")
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"
    click.echo(f"shadow {report['shadow']} vs active {report['champion']}")
    click.echo(f"period:              {report['started_at']:%Y-%m-%d %H:%M} -> {report['until']:%Y-%m-%d %H:%M} UTC "
               f"({report['elapsed_hours']:.1f} h of {criteria.hours} h)")
    click.echo(f"scores:              {report['shadow_scores']} shadow, {report['pairs']} on articles both scored")
    click.echo(f"sentiment agreement: {pct(report['sentiment_agreement'])} (minimum {pct(criteria.min_agreement)})")
    click.echo(f"topic agreement:     {pct(report['topic_agreement'])}")
    click.echo(f"mean confidence:     shadow {num(report['shadow_confidence'])}, "
               f"active {num(report['champion_confidence'])} (max drop {criteria.max_confidence_drop})")
    click.echo(f"topic confidence:    shadow {num(report['shadow_topic_confidence'])}, "
               f"active {num(report['champion_topic_confidence'])}")
    click.echo(f"verdict:             {report['verdict']}" + (f" ({'; '.join(report['problems'])})"
                                                            if report["problems"] else ""))
    if "action" in report:
        click.echo(f"action:              {report['action']}")


@models_group.command("promote")
@click.argument("version")
@click.option("--by", "user", help="Who promotes [default: OS user].")
@click.option("--reason", default="manual promote", show_default=True, help="Why (kept in the alias history).")
def models_promote(version: str, user: str | None, reason: str) -> None:
    """Make VERSION the active model; running workers switch at their next batch boundary."""

    with database_engine(get_settings()) as engine:
        try:
            previous = promote(engine, version, by=_who(user), reason=reason)
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"active: {previous or '-'} -> {version}")


@models_group.command("rollback")
@click.option("--by", "user", help="Who rolls back [default: OS user].")
def models_rollback(user: str | None) -> None:
    """Re-activate the version that was active before the current one (the current one is marked rejected)."""

    with database_engine(get_settings()) as engine:
        try:
            current, target = rollback(engine, by=_who(user))
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"active: {current} -> {target} (rolled back)")


# ---------------------------------------------------------------- feedback


@click.group("feedback")
def feedback_group() -> None:
    """Analyst label corrections (also accepted by the API's POST /feedback)."""


@feedback_group.command("import")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--by", "author", help="Who labelled the file (recorded on every row) [default: OS user].")
def feedback_import(csv_file: Path, author: str | None) -> None:
    """Import labels from CSV_FILE: columns article_id and/or text, topic and/or sentiment.

    Every row is recorded as labelled by --by (or the OS user): one file is one person's opinion, so an
    'author' column is refused (it would let one file pose as several agreeing analysts). All rows are
    validated first; one bad row rejects the whole file with its line number, nothing is stored. A row with an
    article_id and no text must name a stored article (its headline is what is trained on).
    """

    rows, errors = [], []
    who = _who(author)
    try:
        with open(csv_file, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            fields = set(reader.fieldnames or ())
            if not fields & {"article_id", "text"} or not fields & {"topic", "sentiment"}:
                raise click.ClickException(
                    f"{csv_file}: need an article_id and/or text column and a topic and/or sentiment column; "
                    f"got {sorted(fields)}")
            if "author" in fields:
                raise click.ClickException(
                    f"{csv_file}: has an 'author' column; a file is imported as one author's labels "
                    "(--by), so split it per author, nothing imported")
            for line, record in enumerate(reader, start=2):
                try:
                    rows.append(validate_feedback(
                        article_id=record.get("article_id"), text=record.get("text"), topic=record.get("topic"),
                        sentiment=record.get("sentiment"), author=who))
                except ValueError as exc:
                    errors.append(f"line {line}: {exc}")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise click.ClickException(f"{csv_file}: not a UTF-8 CSV file ({exc}), nothing imported") from None
    if errors:
        shown = "\n  ".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise click.ClickException(f"{csv_file}: {len(errors)} invalid row(s), nothing imported:\n  {shown}")
    with database_engine(get_settings()) as engine, engine.begin() as conn:
        unknown = unknown_article_ids(conn, rows)
        if unknown:
            shown = ", ".join(sorted(unknown)[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise click.ClickException(
                f"{csv_file}: {len(unknown)} article_id(s) without a text name no stored article, so their labels "
                f"could never be trained on (another environment's ids?): {shown}; add a text column, nothing "
                "imported")
        ids = insert_many(conn, rows, origin="csv")
    click.echo(f"imported {len(ids)} feedback row(s) from {csv_file} as {who}")


@feedback_group.command("requests")
@click.option("--id", "request_id", type=int, help="Show the texts of this request.")
@click.option("--all", "show_all", is_flag=True, help="Include closed requests.")
@click.option("--close", "close_id", type=int, help="Close this request (its texts were labelled).")
def feedback_requests(request_id: int | None, show_all: bool, close_id: int | None) -> None:
    """Labelling requests opened by drift: the most uncertain texts of the drifted slice, to label first."""

    with database_engine(get_settings()) as engine:
        if close_id is not None:
            with engine.begin() as conn:
                closed = labelling.close_request(conn, close_id)
            if not closed:
                raise click.ClickException(f"no open labelling request {close_id}")
            click.echo(f"closed request {close_id}")
            return
        with engine.connect() as conn:
            if request_id is not None:
                items = labelling.request_items(conn, request_id)
                if not items:
                    raise click.ClickException(f"labelling request {request_id} has no texts (or does not exist)")
                click.echo(f"{'uncertainty':>11}  {'article':<20} {'predicted':<36} title")
                for it in items:
                    click.echo(f"{it['uncertainty']:>11.3f}  {it['article_id']:<20} "
                               f"{(it['sentiment'] or '-') + ' / ' + (it['topic'] or '-'):<36} {it['title'] or ''}")
                return
            requests = labelling.list_requests(conn, status=None if show_all else "open")
    if not requests:
        click.echo("no labelling requests" + ("" if show_all else " open"))
        return
    for req in requests:
        click.echo(f"#{req['id']} {req['status']:<6} {req['created_at']:%Y-%m-%d %H:%M} model {req['model_version']} "
                   f"{req['items']} texts; window {req['window_start']:%Y-%m-%d %H:%M} -> "
                   f"{req['window_end']:%Y-%m-%d %H:%M}; {'; '.join(req['reasons'])}")


# ---------------------------------------------------------------- scheduler


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Run one tick (decide, maybe retrain) and exit.")
def scheduler_command(once: bool) -> None:
    """Retrain on the cron schedule (settings retrain.schedule, default weekly) or on drift, one replica at a time.

    With --once the exit code is that of `marketmood retrain`: 1 when the retrain it ran was rejected or failed."""
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.scheduler import Scheduler

    _setup_logging()
    settings = get_settings()
    # SIGTERM from the start: one during the embedded database's start-up left it running with no owner
    with sigterm_as_interrupt(), database_engine(settings) as engine:
        scheduler = Scheduler(engine, settings)
        if once:
            decision, outcome = scheduler.tick()
            click.echo(decision.reason + (f" -> {outcome.status} {outcome.version or ''}: {outcome.reason}"
                                          if outcome else ""))
            if outcome is not None and outcome.status in {"rejected", "failed"}:  # as `marketmood retrain` exits
                sys.exit(1)
            return
        stop = threading.Event()
        try:
            scheduler.run_forever(stop)
        except KeyboardInterrupt:
            stop.set()


COMMANDS = [retrain_command, models_group, feedback_group, scheduler_command]
