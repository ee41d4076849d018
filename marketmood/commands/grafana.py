"""``marketmood grafana render|push``: dashboards as code, written to docker/grafana or sent to a live Grafana."""

from __future__ import annotations

from pathlib import Path

import click
from marketmood.commands.params import FiniteFloatRange
from marketmood.dashboards import render
from marketmood.dashboards.provisioning import PostgresTarget
from marketmood.dashboards.push import PushError, connect, push, redacted
from marketmood.schema import reader_password_given
from marketmood.settings import get_settings


@click.group("grafana")
def grafana_group() -> None:
    """Grafana dashboards and datasources defined in marketmood/dashboards."""


@click.command("render")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder to write to [default: docker/grafana in the repository].")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the files differ from the code.")
def render_command(out_dir: Path | None, check: bool) -> None:
    """Write dashboard JSON and Grafana provisioning files (datasources, dashboard provider)."""

    root = out_dir or render.GRAFANA_DIR
    if check:
        stale = render.stale(root)
        if stale:
            click.echo("out of date (run `marketmood grafana render`): " + ", ".join(stale), err=True)
            raise SystemExit(1)
        click.echo(f"{root}: up to date")
        return
    written = render.write(root)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"{root}: already up to date")


@click.command("push")
@click.option("--url", help="Grafana base URL, with its sub-path if served under one [default: settings grafana.url].")
@click.option("--token", help="Service-account token (Bearer), Admin role: Editors cannot write datasources "
              "[default: MARKETMOOD_GRAFANA__TOKEN].")
@click.option("--db-host", default="postgres:5432", show_default=True,
              help="PostgreSQL host:port as Grafana reaches it.")
@click.option("--db-name", default="marketmood", show_default=True, help="Database name Grafana reads.")
@click.option("--db-user", help="Read-only role [default: settings grafana.reader_role].")
@click.option("--db-password", help="Its password [default: settings grafana.reader_password, when set; "
              "required otherwise].")
@click.option("--prometheus-url", default="http://prometheus:9090", show_default=True,
              help="Prometheus URL as Grafana reaches it.")
@click.option("--timeout", type=FiniteFloatRange(0, min_open=True), default=10.0, show_default=True,
              help="HTTP timeout in seconds.")
def push_command(url: str | None, token: str | None, db_host: str, db_name: str, db_user: str | None,
                 db_password: str | None, prometheus_url: str, timeout: float) -> None:
    """Create or update the datasources, the MarketMood folder and every dashboard through the HTTP API."""

    grafana = get_settings().grafana
    token = token or grafana.token
    if not token:
        raise click.UsageError("a Grafana token is required: --token or MARKETMOOD_GRAFANA__TOKEN")
    password = db_password or (grafana.reader_password if reader_password_given(grafana) else None)
    if not password:
        raise click.UsageError("the reader role's password is required: --db-password or "
                               "MARKETMOOD_GRAFANA__READER_PASSWORD (the default is the public dev password)")
    target = PostgresTarget(host=db_host, database=db_name, user=db_user or grafana.reader_role, password=password)
    base_url = url or grafana.url
    try:
        result = push(connect(base_url, token, timeout), target, prometheus_url=prometheus_url)
    except PushError as exc:  # names the step, the status and what to check; never the token
        raise click.ClickException(f"Grafana push failed at {exc}") from None
    except (OSError, ValueError) as exc:  # connection refused, DNS, TLS, a URL without a scheme (niquests: OSError)
        # a password in the URL's user-info stays out of the message (the error text may quote the URL too)
        detail = (str(exc).splitlines() or [""])[0].replace(base_url, redacted(base_url))
        raise click.ClickException(f"cannot reach Grafana at {redacted(base_url)}: {type(exc).__name__}: "
                                   f"{detail}") from None
    for kind, uid, outcome in result.actions:
        click.echo(f"{kind} {uid}: {outcome}")


grafana_group.add_command(render_command)
grafana_group.add_command(push_command)

COMMANDS = [grafana_group]
