"""`marketmood grafana push` against a real local HTTP server that plays Grafana's API and records requests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.dashboards.definitions import PIPELINE_UID, POSTGRES_UID, PROMETHEUS_UID, SENTIMENT_UID

TOKEN = "glsa_test_token"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """Existing objects decide GET answers (404 when missing); writes are recorded and answered 200.

    Folders behave as in Grafana 11: ``folders`` (uid -> title, top level) are what the token sees; ``hidden``
    ones exist but it cannot see them (folder permissions). A new folder whose title a top-level folder already
    has is refused with 409, and search lists the visible folders whose title contains the query (any case).
    """

    existing: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    fail_with: int | None = None
    raw: tuple[int, str, bytes] | None = None  # (status, content type, body) for every request: a proxy, a login page
    folders: dict[str, str] = field(default_factory=dict)
    hidden: dict[str, str] = field(default_factory=dict)

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if self.fail_with:
            return self.fail_with, {"message": "permission denied"}
        route, _, query = path.partition("?")
        key = route.split("/api/", 1)[-1]  # the same API under a sub-path
        if method == "GET" and key == "search":
            params = parse_qs(query)
            wanted = params.get("query", [""])[0].casefold()
            if params.get("type") != ["dash-folder"]:
                return 200, []
            return 200, [{"id": 100 + i, "uid": uid, "title": title, "type": "dash-folder",
                          "url": f"/dashboards/f/{uid}/"}
                         for i, (uid, title) in enumerate(self.folders.items()) if wanted in title.casefold()]
        if method == "GET":
            if key in self.existing or key.removeprefix("folders/") in self.folders:
                return 200, {"id": 42, "uid": key.rsplit("/", 1)[-1]}
            return 404, {"message": "not found"}
        if key == "folders":
            if body["title"] in {**self.folders, **self.hidden}.values():
                return 409, {"message": "a folder with the same name already exists in the current location"}
            self.folders[body.get("uid") or "generated"] = body["title"]
        if key == "dashboards/db":
            return 200, {"status": "success", "uid": body["dashboard"]["uid"], "version": 1}
        return 200, {"message": "ok", "id": 7}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            fake.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            if fake.raw is not None:
                status, content_type, data = fake.raw
            else:
                status, payload = fake.answer(self.command, self.path, body)
                data, content_type = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def _push(grafana: FakeGrafana, *extra: str) -> Any:
    return CliRunner().invoke(
        cli, ["grafana", "push", "--url", grafana.url, "--token", TOKEN, "--db-password", "s3cret", *extra]
    )


def test_push_creates_everything_on_an_empty_grafana(grafana: FakeGrafana) -> None:
    result = _push(grafana)
    assert result.exit_code == 0, result.output
    calls = [(r.method, r.path) for r in grafana.requests]
    assert calls == [
        ("GET", f"/api/datasources/uid/{POSTGRES_UID}"),
        ("POST", "/api/datasources"),
        ("GET", f"/api/datasources/uid/{PROMETHEUS_UID}"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders/marketmood"),
        ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
    ]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in grafana.requests)

    postgres = grafana.requests[1].body
    assert postgres["type"] == "grafana-postgresql-datasource" and postgres["uid"] == POSTGRES_UID
    assert postgres["user"] == "marketmood_grafana"  # the read-only role, never the owner
    assert postgres["secureJsonData"] == {"password": "s3cret"}
    assert postgres["jsonData"]["database"] == "marketmood"
    assert grafana.requests[3].body["type"] == "prometheus"
    assert grafana.requests[5].body == {"title": "MarketMood", "uid": "marketmood"}

    dashboards = [r.body for r in grafana.requests if r.path == "/api/dashboards/db"]
    assert [d["dashboard"]["uid"] for d in dashboards] == [SENTIMENT_UID, PIPELINE_UID]
    for body in dashboards:
        assert body["overwrite"] is True and body["folderUid"] == "marketmood"
        assert body["dashboard"]["id"] is None
        assert body["dashboard"]["panels"]
    assert f"dashboard {SENTIMENT_UID}: success" in result.output


def test_push_updates_existing_objects(grafana: FakeGrafana) -> None:
    grafana.existing |= {f"datasources/uid/{POSTGRES_UID}", f"datasources/uid/{PROMETHEUS_UID}", "folders/marketmood"}
    result = _push(grafana)
    assert result.exit_code == 0, result.output
    writes = [(r.method, r.path) for r in grafana.requests if r.method != "GET"]
    assert writes == [
        ("PUT", f"/api/datasources/uid/{POSTGRES_UID}"),
        ("PUT", f"/api/datasources/uid/{PROMETHEUS_UID}"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
    ]
    assert grafana.requests[1].body["id"] == 42  # the id Grafana reported, so PUT updates in place
    assert "datasource marketmood-postgres: updated" in result.output


def test_push_reports_grafana_refusal(grafana: FakeGrafana) -> None:
    grafana.fail_with = 403
    result = _push(grafana)
    assert result.exit_code == 1
    assert "HTTP 403" in result.output


def test_push_requires_a_token(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKETMOOD_GRAFANA__TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["grafana", "push", "--url", grafana.url])
    assert result.exit_code == 2 and "token is required" in result.output
    assert grafana.requests == []


def test_push_to_an_unreachable_or_malformed_url_is_one_error(grafana: FakeGrafana) -> None:
    closed = grafana.url.rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens there
    for url, expected in ((closed, "ConnectionError"), ("not a url", "MissingSchema"), ("http://[::1", "ValueError")):
        result = CliRunner().invoke(cli, ["grafana", "push", "--url", url, "--token", "t", "--timeout", "2",
                                          "--db-password", "s3cret"])
        assert result.exit_code == 1 and f"cannot reach Grafana at {url}: {expected}" in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    for timeout in ("nan", "0", "-1"):
        result = CliRunner().invoke(cli, ["grafana", "push", "--url", grafana.url, "--token", "t", "--timeout", timeout])
        assert result.exit_code == 2 and "--timeout" in result.output, result.output
    assert grafana.requests == []


def test_a_grafana_under_a_sub_path_is_reached_there(grafana: FakeGrafana) -> None:
    """grafana-client appends "api" to the URL's path as given: --url https://host/grafana went to /grafanaapi/...,
    every GET was a 404 ("missing"), and the push failed creating what already existed."""
    result = CliRunner().invoke(cli, ["grafana", "push", "--url", grafana.url + "/grafana", "--token", TOKEN,
                                      "--db-password", "s3cret"])
    paths = [r.path for r in grafana.requests]
    assert paths and all(p.startswith("/grafana/api/") for p in paths), paths
    assert result.exit_code == 0, result.output  # the fake answers any path prefix like the real API


def test_a_login_page_or_proxy_answer_is_one_clear_line(grafana: FakeGrafana) -> None:
    """A 200 HTML page (an SSO proxy's login) was read as the datasource: AttributeError traceback."""
    grafana.raw = (200, "text/html", b"<html><body>Please log in</body></html>")
    result = _push(grafana)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert "failed at datasource marketmood-postgres: the answer is not Grafana API JSON" in result.output
    assert len(grafana.requests) == 1  # nothing written on a server that is not Grafana's API


@pytest.mark.parametrize("status, says", [
    (401, "HTTP 401: Unauthorized (the token is missing, expired or revoked"),
    (403, "HTTP 403: Client Error 403: permission denied (the token's service account lacks the permission: "
          "datasources need the Admin role)"),
    (500, "HTTP 500: Server Error 500: permission denied"),
])
def test_refusals_name_the_step_and_what_to_check(grafana: FakeGrafana, status: int, says: str) -> None:
    grafana.fail_with = status
    result = _push(grafana)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: Grafana push failed at datasource marketmood-postgres: {says}" in result.output, result.output
    assert TOKEN not in result.output


def test_a_404_page_is_not_dumped_into_the_terminal(grafana: FakeGrafana) -> None:
    """A proxy's 404 page (no Grafana at that path) came back whole in the error: kilobytes of HTML."""
    grafana.raw = (404, "text/html", b"<!doctype html><html><body>" + b"x" * 5000 + b"</body></html>")
    result = _push(grafana)
    assert result.exit_code == 1 and "failed at datasource marketmood-postgres: HTTP 404" in result.output
    assert "is --url Grafana's base URL" in result.output
    assert len(result.output) < 800, len(result.output)


def test_a_password_in_the_url_stays_out_of_the_error(grafana: FakeGrafana) -> None:
    closed = grafana.url.rsplit(":", 1)[0].replace("http://", "http://admin:hunter2@") + ":9"
    result = CliRunner().invoke(cli, ["grafana", "push", "--url", closed, "--token", TOKEN, "--timeout", "2",
                                      "--db-password", "s3cret"])
    assert result.exit_code == 1 and "cannot reach Grafana at http://admin:***@127.0.0.1:9" in result.output, (
        result.output)
    assert "hunter2" not in result.output and TOKEN not in result.output


def test_a_folder_already_titled_marketmood_is_adopted(grafana: FakeGrafana) -> None:
    """A "MarketMood" folder made by hand (or by file provisioning without ``folderUid``) has another uid, and
    Grafana refuses a second folder with its title (409): the push failed at the folder. Now the dashboards go
    into that folder, the output says so, and a second push does the same (nothing is created twice)."""
    grafana.folders["f3Kx9aQ"] = "MarketMood"
    for _ in range(2):
        result = _push(grafana)
        assert result.exit_code == 0, result.output
        assert "folder f3Kx9aQ: adopted the existing folder titled 'MarketMood'" in result.output, result.output
    assert grafana.folders == {"f3Kx9aQ": "MarketMood"}
    dashboards = [r.body for r in grafana.requests if r.path == "/api/dashboards/db"]
    assert len(dashboards) == 4 and {d["folderUid"] for d in dashboards} == {"f3Kx9aQ"}


def test_a_folder_of_that_title_the_token_cannot_see_is_one_clear_error(grafana: FakeGrafana) -> None:
    """The title is taken by a folder the service account has no access to: nothing to adopt, so the push stops
    at the folder with one line saying what to do, and writes no dashboard into a folder that does not exist."""
    grafana.hidden["private1"] = "MarketMood"
    grafana.folders["other"] = "MarketMood archive"  # search matches substrings: not this one
    result = _push(grafana)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("Grafana push failed at folder marketmood: HTTP 409: a folder titled 'MarketMood' already exists and "
            "this token cannot see it") in result.output, result.output
    assert not [r for r in grafana.requests if r.path == "/api/dashboards/db"]
