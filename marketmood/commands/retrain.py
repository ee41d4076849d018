"""``marketmood retrain``, ``models list|show|promote|rollback``, ``feedback import`` and ``scheduler``."""

from __future__ import annotations

import csv
import getpass
import json
import sys
import threading
from pathlib import Path
from typing import Any

import click

from marketmood.runtime import database_engine
from marketmood.settings import get_settings


def _setup_logging() -> None:
    from marketmood.logs import configure_logging

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
    from storage import registry as sql
    from training.registry import ensure_champion

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
    """One version: lineage, fingerprint, metrics and its promotion-gate report."""
    from storage import registry as sql

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


@models_group.command("promote")
@click.argument("version")
@click.option("--by", "user", help="Who promotes [default: OS user].")
@click.option("--reason", default="manual promote", show_default=True)
def models_promote(version: str, user: str | None, reason: str) -> None:
    """Make VERSION the active model; running workers switch at their next batch boundary."""
    from training.registry import RegistryError, promote

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
    from training.registry import RegistryError, rollback

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
@click.option("--author", help="Author for rows without an 'author' column [default: OS user].")
def feedback_import(csv_file: Path, author: str | None) -> None:
    """Import corrections from CSV_FILE: columns article_id and/or text, topic and/or sentiment, optional author.

    All rows are validated first; one bad row rejects the whole file with its line number, nothing is stored.
    """
    from storage.feedback import insert_many, validate_feedback

    rows, errors = [], []
    try:
        with open(csv_file, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            fields = set(reader.fieldnames or ())
            if not fields & {"article_id", "text"} or not fields & {"topic", "sentiment"}:
                raise click.ClickException(
                    f"{csv_file}: need an article_id and/or text column and a topic and/or sentiment column; "
                    f"got {sorted(fields)}")
            for line, record in enumerate(reader, start=2):
                try:
                    rows.append(validate_feedback(
                        article_id=record.get("article_id"), text=record.get("text"), topic=record.get("topic"),
                        sentiment=record.get("sentiment"), author=record.get("author") or _who(author)))
                except ValueError as exc:
                    errors.append(f"line {line}: {exc}")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise click.ClickException(f"{csv_file}: not a UTF-8 CSV file ({exc}), nothing imported") from None
    if errors:
        shown = "\n  ".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise click.ClickException(f"{csv_file}: {len(errors)} invalid row(s), nothing imported:\n  {shown}")
    with database_engine(get_settings()) as engine, engine.begin() as conn:
        ids = insert_many(conn, rows, origin="csv")
    click.echo(f"imported {len(ids)} feedback row(s) from {csv_file}")


# ---------------------------------------------------------------- scheduler


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Run one tick (decide, maybe retrain) and exit.")
def scheduler_command(once: bool) -> None:
    """Retrain on the cron schedule (settings retrain.schedule, default weekly) or on drift, one replica at a time."""
    from marketmood.runtime import sigterm_as_interrupt
    from training.scheduler import Scheduler

    _setup_logging()
    settings = get_settings()
    with database_engine(get_settings()) as engine:
        scheduler = Scheduler(engine, settings)
        if once:
            decision, outcome = scheduler.tick()
            click.echo(f"{decision.reason}" + (f" -> {outcome.status} {outcome.version or ''}" if outcome else ""))
            return
        stop = threading.Event()
        with sigterm_as_interrupt():
            try:
                scheduler.run_forever(stop)
            except KeyboardInterrupt:
                stop.set()


COMMANDS = [retrain_command, models_group, feedback_group, scheduler_command]
