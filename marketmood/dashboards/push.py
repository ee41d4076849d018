"""Create or update MarketMood's datasources, folder and dashboards on a running Grafana via its HTTP API.

Uses ``grafana-client``: the maintained fork of ``grafana-api`` (whose last release was 2020), with the same
``GrafanaApi`` surface, service-account token auth and current endpoints. Every step is idempotent, so a push
can be re-run after each deploy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from marketmood.dashboards.definitions import FOLDER, all_dashboards, to_json_dict
from marketmood.dashboards.provisioning import (
    PostgresTarget,
    postgres_datasource,
    prometheus_datasource,
)

FOLDER_UID = "marketmood"


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push did, one line per object, e.g. ``("datasource", "marketmood-postgres", "created")``."""

    actions: tuple[tuple[str, str, str], ...]


def _is_not_found(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def upsert_datasource(api: GrafanaApi, payload: dict[str, Any]) -> str:
    """PUT by uid when it exists, POST otherwise."""
    uid = payload["uid"]
    try:
        existing = api.datasource.get_datasource_by_uid(uid)
    except GrafanaClientError as exc:
        if not _is_not_found(exc):
            raise
        api.datasource.create_datasource(payload)
        return "created"
    api.datasource.update_datasource_by_uid(uid, {**payload, "id": existing.get("id")})
    return "updated"


def ensure_folder(api: GrafanaApi, uid: str = FOLDER_UID, title: str = FOLDER) -> str:
    try:
        api.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if not _is_not_found(exc):
            raise
        api.folder.create_folder(title, uid=uid)
        return "created"
    return "exists"


def push(
    api: GrafanaApi,
    target: PostgresTarget,
    *,
    prometheus_url: str = "http://prometheus:9090",
    dashboards: Iterable[str] | None = None,
) -> PushResult:
    """Datasources first (dashboards reference them by uid), then the folder, then each dashboard."""
    actions: list[tuple[str, str, str]] = []
    for payload in (postgres_datasource(target), prometheus_datasource(prometheus_url)):
        actions.append(("datasource", payload["uid"], upsert_datasource(api, payload)))
    actions.append(("folder", FOLDER_UID, ensure_folder(api)))
    wanted = set(dashboards) if dashboards is not None else None
    for uid, builder in all_dashboards().items():
        if wanted is not None and uid not in wanted:
            continue
        body = {
            "dashboard": {**to_json_dict(builder), "id": None},
            "folderUid": FOLDER_UID,
            "overwrite": True,
            "message": "marketmood grafana push",
        }
        response = api.dashboard.update_dashboard(body)
        actions.append(("dashboard", uid, str(response.get("status", "success"))))
    return PushResult(actions=tuple(actions))


def connect(url: str, token: str, timeout: float = 10.0) -> GrafanaApi:
    """A client for ``url`` authenticating with a service-account token (``Authorization: Bearer``)."""
    return GrafanaApi.from_url(url=url, credential=token, timeout=timeout)
