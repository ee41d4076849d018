"""Grafana datasources and dashboard provider, as data: one definition for provisioning files and for push.

The PostgreSQL datasource logs in as the read-only role created by migration ``0002_grafana_reader``, so a
dashboard (or anyone with Grafana's editor rights) can read but never change the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marketmood.dashboards.definitions import FOLDER, FOLDER_UID, POSTGRES_UID, PROMETHEUS_UID
from marketmood.dashboards.sqlquery import POSTGRES_TYPE

# Inside the compose network; Grafana expands ${VAR} in provisioning files from its own environment.
PASSWORD_ENV = "MARKETMOOD_GRAFANA__READER_PASSWORD"
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards/marketmood"


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """Where Grafana reaches PostgreSQL (host as seen from Grafana, not from us) and as whom."""

    host: str = "postgres:5432"
    database: str = "marketmood"
    user: str = "marketmood_grafana"
    password: str = "${" + PASSWORD_ENV + "}"
    sslmode: str = "disable"


def postgres_datasource(target: PostgresTarget) -> dict[str, Any]:
    """The PostgreSQL datasource (same keys for the provisioning file and the HTTP API)."""
    return {
        "name": "MarketMood PostgreSQL",
        "uid": POSTGRES_UID,
        "type": POSTGRES_TYPE,
        "access": "proxy",
        "url": target.host,
        "user": target.user,
        "isDefault": True,
        "jsonData": {
            "database": target.database,
            "sslmode": target.sslmode,
            "postgresVersion": 1500,
            "timescaledb": False,
            "maxOpenConns": 10,
        },
        "secureJsonData": {"password": target.password},
    }


def prometheus_datasource(url: str = "http://prometheus:9090") -> dict[str, Any]:
    """Prometheus scraping the workers' metrics (lag, throughput, dead letters)."""
    return {
        "name": "MarketMood Prometheus",
        "uid": PROMETHEUS_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "isDefault": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
    }


def datasources_file(target: PostgresTarget = PostgresTarget()) -> dict[str, Any]:
    """``provisioning/datasources/marketmood.yaml``."""
    return {"apiVersion": 1, "datasources": [postgres_datasource(target), prometheus_datasource()]}


def dashboard_provider_file() -> dict[str, Any]:
    """``provisioning/dashboards/marketmood.yaml``: load the generated JSON into the MarketMood folder."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "marketmood",
                "orgId": 1,
                "folder": FOLDER,
                "folderUid": FOLDER_UID,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": DASHBOARDS_MOUNT, "foldersFromFilesStructure": False},
            }
        ],
    }
