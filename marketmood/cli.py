"""The ``marketmood`` command line. Each area registers its commands from ``marketmood.commands.<area>``."""

from __future__ import annotations

import errno
import importlib
import sys

import click

from marketmood.settings import ConfigError
from models.artifact import ArtifactError
from storage.db import DatabaseUnavailableError
from storage.embedded import EmbeddedPostgresError
from streams.broker import BrokerError

# One module per area; each exposes ``COMMANDS``: a list of click commands/groups to register.
COMMAND_MODULES: tuple[str, ...] = (
    "marketmood.commands.model",
    "marketmood.commands.grafana",
    "marketmood.commands.api",
    "marketmood.commands.pipeline",
    "marketmood.commands.publish",
    "marketmood.commands.retrain",
    "marketmood.commands.db",
    "marketmood.commands.alerts",
    "marketmood.commands.report",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="marketmood")
def cli() -> None:
    """MarketMood: topic and sentiment monitoring for financial news.

    Leave MARKETMOOD_KAFKA_BOOTSTRAP and MARKETMOOD_DATABASE_URL unset to run on an embedded Kafka-protocol
    broker (tansu) and an embedded PostgreSQL; set them to use external ones. Every setting can also be given
    as MARKETMOOD_* environment variables or a TOML/YAML file named by MARKETMOOD_CONFIG.
    """


for _module_name in COMMAND_MODULES:
    for _command in importlib.import_module(_module_name).COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point: configuration errors become one readable message and exit code 2."""
    try:
        cli.main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (DatabaseUnavailableError, EmbeddedPostgresError, ArtifactError, BrokerError) as exc:  # they name what
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        click.echo(f"error: a port is already in use ({exc}): another MarketMood process on this host? "
                   "Give this one another --port / --metrics-port (0 turns the metrics server off)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
