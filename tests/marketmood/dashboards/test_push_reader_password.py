"""`marketmood grafana push` never sends the reader role's public dev default password to Grafana.

Without --db-password and without MARKETMOOD_GRAFANA__READER_PASSWORD it used to push "marketmood-grafana-dev"
(the settings default) into the datasource: a working login to anyone who read the source, or a broken one
where the role has a real password. Checked against the same real local HTTP server as tests/.../test_push.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.dashboards.definitions import POSTGRES_UID
from marketmood.settings import GrafanaSettings, get_settings
from tests.marketmood.dashboards.test_push import TOKEN, FakeGrafana
from tests.marketmood.dashboards.test_push import grafana as grafana  # noqa: F401  (the fixture)

DEV_DEFAULT = GrafanaSettings.model_fields["reader_password"].default


@pytest.fixture(autouse=True)
def no_reader_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from a process given no reader setting at all (and reads the settings afresh)."""
    for key in list(os.environ):
        if key.startswith("MARKETMOOD_GRAFANA__") or key == "MARKETMOOD_CONFIG":
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _push(grafana: FakeGrafana, *extra: str, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(cli, ["grafana", "push", "--url", grafana.url, "--token", TOKEN, *extra], env=env)


def _sent_passwords(grafana: FakeGrafana) -> list[str]:
    return [r.body["secureJsonData"]["password"] for r in grafana.requests
            if r.method in {"POST", "PUT"} and isinstance(r.body, dict) and "secureJsonData" in r.body]


def test_push_without_a_reader_password_refuses_instead_of_sending_the_dev_default(grafana: FakeGrafana) -> None:
    assert DEV_DEFAULT == "marketmood-grafana-dev"
    grafana.existing |= {f"datasources/uid/{POSTGRES_UID}"}  # an existing datasource would have been overwritten
    result = _push(grafana)
    assert result.exit_code == 2, result.output
    assert "password is required: --db-password or MARKETMOOD_GRAFANA__READER_PASSWORD" in result.output
    assert "Traceback" not in result.output
    assert grafana.requests == []  # nothing sent, nothing half-pushed
    assert DEV_DEFAULT not in json.dumps([r.body for r in grafana.requests])


def test_reader_limits_alone_do_not_count_as_a_password(grafana: FakeGrafana) -> None:
    """`db upgrade` treats limits-only as "reader settings given" (it may update the role); push must not: the
    password would still be the dev default."""
    result = _push(grafana, env={"MARKETMOOD_GRAFANA__READER_CONNECTION_LIMIT": "7",
                                 "MARKETMOOD_GRAFANA__READER_STATEMENT_TIMEOUT_S": "10"})
    assert result.exit_code == 2 and "password is required" in result.output, result.output
    assert grafana.requests == []


def test_push_sends_the_configured_reader_password(grafana: FakeGrafana) -> None:
    result = _push(grafana, env={"MARKETMOOD_GRAFANA__READER_PASSWORD": "from-the-environment"})
    assert result.exit_code == 0, result.output
    assert _sent_passwords(grafana) == ["from-the-environment"]


def test_db_password_option_wins_over_the_settings(grafana: FakeGrafana) -> None:
    result = _push(grafana, "--db-password", "from-the-option",
                   env={"MARKETMOOD_GRAFANA__READER_PASSWORD": "from-the-environment"})
    assert result.exit_code == 0, result.output
    assert _sent_passwords(grafana) == ["from-the-option"]
    result = CliRunner().invoke(cli, ["grafana", "push", "--url", grafana.url, "--token", TOKEN, "--db-password", "x"])
    assert result.exit_code == 0, result.output  # the option alone is enough
