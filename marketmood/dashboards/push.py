"""Create or update MarketMood's datasources, folder and dashboards on a running Grafana via its HTTP API.

Uses ``grafana-client``: the maintained fork of ``grafana-api`` (whose last release was 2020), with the same
``GrafanaApi`` surface, service-account token auth and current endpoints. Every step is idempotent, so a push
can be re-run after each deploy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from marketmood.dashboards.definitions import FOLDER, FOLDER_UID, all_dashboards, to_json_dict
from marketmood.dashboards.provisioning import (
    PostgresTarget,
    postgres_datasource,
    prometheus_datasource,
)

_T = TypeVar("_T")

# What an operator does about each refusal (the client's own messages are "Unauthorized", "Client Error 403: ...").
_HINTS = {
    401: "the token is missing, expired or revoked: check --token / MARKETMOOD_GRAFANA__TOKEN",
    403: "the token's service account lacks the permission: datasources need the Admin role",
    404: "nothing answers there: is --url Grafana's base URL (with its sub-path, if it is served under one)?",
}


class PushError(Exception):
    """One step of a push failed: which step, the HTTP status (None: not an HTTP refusal) and a one-line reason.

    The message never carries the response body beyond its first line (a proxy's 404 page is kilobytes of HTML)
    nor the request's headers (the token).
    """

    def __init__(self, step: str, status: int | None, reason: str) -> None:
        self.step, self.status, self.reason = step, status, reason
        hint = _HINTS.get(status or 0)
        super().__init__(f"{step}: " + (f"HTTP {status}: " if status else "") + reason + (f" ({hint})" if hint else ""))


def _first_line(text: object, limit: int = 200) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def _json_object(step: str, response: object) -> dict[str, Any]:
    """Grafana's API answers JSON objects; anything else (a login page, a proxy's HTML with 200) is no Grafana API,
    and reading it as one was an AttributeError traceback."""
    if not isinstance(response, dict):
        raise PushError(step, None, "the answer is not Grafana API JSON (a login page or a proxy in front of "
                                    f"Grafana?): {_first_line(response, 80)!r}")
    return response


def _refused(step: str, exc: GrafanaException) -> PushError:
    return PushError(step, exc.status_code or None, _first_line(exc.message))  # status 0: timeout, transport


def _step(step: str, call: Callable[[], _T]) -> _T:
    """Run one API call, turning the client's refusals into a :class:`PushError` that names the step."""
    try:
        return call()
    except GrafanaException as exc:
        raise _refused(step, exc) from None


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push did, one line per object, e.g. ``("datasource", "marketmood-postgres", "created")``."""

    actions: tuple[tuple[str, str, str], ...]


def _is_not_found(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def _get_or_create(step: str, get: Callable[[], object], create: Callable[[], object]) -> dict[str, Any] | None:
    """The object ``get`` finds, or None after ``create`` made it (on a 404); any other refusal, a 5xx or a
    timeout included, is a :class:`PushError` naming ``step``."""
    try:
        return _json_object(step, get())
    except GrafanaClientError as exc:
        if not _is_not_found(exc):
            raise _refused(step, exc) from None
    except GrafanaException as exc:  # 5xx, timeout
        raise _refused(step, exc) from None
    _json_object(step, _step(step, create))
    return None


def upsert_datasource(api: GrafanaApi, payload: dict[str, Any]) -> str:
    """PUT by uid when it exists, POST otherwise."""
    uid = payload["uid"]
    step = f"datasource {uid}"
    existing = _get_or_create(step, lambda: api.datasource.get_datasource_by_uid(uid),
                              lambda: api.datasource.create_datasource(payload))
    if existing is None:
        return "created"
    _json_object(step, _step(step, lambda: api.datasource.update_datasource_by_uid(uid, {**payload,
                                                                                         "id": existing.get("id")})))
    return "updated"


def _is_title_taken(exc: PushError) -> bool:
    """Grafana refuses a second top-level folder with a title: 409 since 8.0.5, 400 before; the message is "a
    folder with the same name already exists[ in the current location]" (older: "a folder or dashboard in the
    general folder with the same name already exists")."""
    return exc.status == 409 or (exc.status == 400 and "same name" in exc.reason)


def _folders_titled(api: GrafanaApi, step: str, title: str) -> list[dict[str, Any]]:
    """The top-level folders the token sees whose title is ``title`` (exactly; else ignoring case, as a
    MySQL-backed Grafana compares titles). Search matches substrings in any case and lists nested folders too
    (with their parent's ``folderUid``): neither blocks a top-level folder."""
    found = _step(step, lambda: api.search.search_dashboards(query=title, type_="dash-folder"))
    if not isinstance(found, list):
        raise PushError(step, None, f"the folder search answered no list: {_first_line(found, 80)!r}")
    top = [f for f in found if isinstance(f, dict) and f.get("uid") and not f.get("folderUid")]
    return ([f for f in top if f.get("title") == title]
            or [f for f in top if str(f.get("title", "")).casefold() == title.casefold()])


def ensure_folder(api: GrafanaApi, uid: str = FOLDER_UID, title: str = FOLDER) -> tuple[str, str]:
    """(the uid of the folder the dashboards go to, what happened): ours, found or created; or a folder that
    already has our title under another uid (made by hand, or by file provisioning without ``folderUid``),
    adopted: Grafana refuses a second one with that title, and an operator who made it meant it for these
    dashboards. Decided again on every push, so renaming or deleting that folder ends the adoption."""
    step = f"folder {uid}"
    try:
        existing = _get_or_create(step, lambda: api.folder.get_folder(uid),
                                  lambda: api.folder.create_folder(title, uid=uid))
    except PushError as exc:
        if not _is_title_taken(exc):
            raise
        folders = _folders_titled(api, step, title)
        if len(folders) != 1:
            raise PushError(step, exc.status, f"a folder titled {title!r} already exists and " + (
                "several folders match it (" + ", ".join(str(f["uid"]) for f in folders) + "): rename all but one"
                if folders else "this token cannot see it: give the service account access to that folder, or "
                "rename or delete it")) from None
        return str(folders[0]["uid"]), (f"adopted the existing folder titled {title!r} (Grafana allows one "
                                         f"folder per title; rename or delete it to have push create uid {uid!r})")
    return uid, "created" if existing is None else "exists"


def push(
    api: GrafanaApi,
    target: PostgresTarget,
    *,
    prometheus_url: str = "http://prometheus:9090",
    dashboards: Iterable[str] | None = None,
) -> PushResult:
    """Datasources first (dashboards reference them by uid), then the folder (ours, or an adopted one with our
    title), then each dashboard into it."""
    actions: list[tuple[str, str, str]] = []
    for payload in (postgres_datasource(target), prometheus_datasource(prometheus_url)):
        actions.append(("datasource", payload["uid"], upsert_datasource(api, payload)))
    folder_uid, outcome = ensure_folder(api)
    actions.append(("folder", folder_uid, outcome))
    wanted = set(dashboards) if dashboards is not None else None
    for uid, builder in all_dashboards().items():
        if wanted is not None and uid not in wanted:
            continue
        body = {
            "dashboard": {**to_json_dict(builder), "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "marketmood grafana push",
        }
        step = f"dashboard {uid}"
        response = _json_object(step, _step(step, lambda: api.dashboard.update_dashboard(body)))  # noqa: B023
        actions.append(("dashboard", uid, str(response.get("status", "success"))))
    return PushResult(actions=tuple(actions))


def connect(url: str, token: str, timeout: float = 10.0) -> GrafanaApi:
    """A client for ``url`` authenticating with a service-account token (``Authorization: Bearer``).

    A base URL with a sub-path gets its trailing slash: grafana-client appends ``api`` to the path as given, so
    ``https://host/grafana`` was sent to ``/grafanaapi/...`` (404s, reported as Grafana refusing the push).
    """
    parts = urlsplit(url)
    if parts.path and not parts.path.endswith("/"):
        url = urlunsplit(parts._replace(path=parts.path + "/"))
    return GrafanaApi.from_url(url=url, credential=token, timeout=timeout)


def redacted(url: str) -> str:
    """``url`` without a password in its user-info, for messages (``https://admin:***@host``)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
    except ValueError:  # unparseable: nothing to recognise a password in, but drop any user-info anyway
        return url.rsplit("@", 1)[-1] if "@" in url else url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))
