"""Configuration errors as a user meets them: `marketmood` run as a process, with a .env and environment variables.

A .env shared with other tools must not stop MarketMood; a MARKETMOOD_* typo must; every problem is one line
of stderr that names the variable, never a traceback, and never echoes a secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MARKETMOOD = str(Path(sys.executable).with_name("marketmood"))


def _run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    return subprocess.run([MARKETMOOD, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_unrelated_dotenv_lines_are_ignored_and_ours_are_used(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / ".env").write_text(
        "# shared with docker compose and other tools\n"
        "POSTGRES_PASSWORD=not-ours\n"
        "COMPOSE_PROJECT_NAME=whatever\n"
        "MARKETMOOD_VERSION=1.2.3\n"  # a compose variable, not a setting
        f"MARKETMOOD_DATABASE_URL={pg_url}\n"
    )
    result = _run(tmp_path, "db", "current")
    assert result.returncode == 0, result.stderr
    assert "(up to date)" in result.stdout  # the .env's database URL was used


def test_unknown_marketmood_line_in_dotenv_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OTHER_TOOL=1\nMARKETMOOD_DATABSE_URL=postgresql://x@db/marketmood\n")
    [line] = _error_lines(_run(tmp_path, "db", "current"))
    assert "MARKETMOOD_DATABSE_URL" in line and ".env" in line
    assert "did you mean MARKETMOOD_DATABASE_URL?" in line


UNREACHABLE_DB = "postgresql://u:hunter2@127.0.0.1:1/x"  # fails fast (exit 1) once the settings are accepted


@pytest.mark.parametrize(("name", "expected"), [
    ("MARKETMOOD_KAFKA_BOOSTRAP", "MARKETMOOD_KAFKA_BOOTSTRAP"),
    ("MARKETMOOD_WORKER_BATCH_SIZE", "MARKETMOOD_WORKER__BATCH_SIZE"),  # one underscore: not the worker section
    ("MARKETMOOD_LOG_LEVEL__DEBUG", "MARKETMOOD_LOG_LEVEL"),  # a scalar has no section
])
def test_an_unknown_marketmood_environment_variable_is_one_line_with_a_suggestion(
        tmp_path: Path, name: str, expected: str) -> None:
    """pydantic-settings reads only the names it knows: MARKETMOOD_KAFKA_BOOSTRAP=kafka:9092 ran the embedded
    broker without a word. Refused like an unknown .env line."""
    [line] = _error_lines(_run(tmp_path, "db", "current", MARKETMOOD_DATABASE_URL=UNREACHABLE_DB,
                               **{name: "kafka:9092"}))
    assert line == f"error: unknown setting {name} in the environment (did you mean {expected}?)", line


def test_unknown_environment_variables_are_reported_with_the_bad_values(tmp_path: Path) -> None:
    """Every problem at once, one line each: a typo does not hide a bad value until the typo is fixed."""
    lines = _error_lines(_run(tmp_path, "db", "current", MARKETMOOD_DATABASE_URL=UNREACHABLE_DB,
                              MARKETMOOD_KAFKA_BOOSTRAP="kafka:9092", MARKETMOOD_LOG_LEVEL="LOUD"))
    assert len(lines) == 2, lines
    assert any("MARKETMOOD_KAFKA_BOOSTRAP in the environment" in line for line in lines), lines
    assert any("invalid setting MARKETMOOD_LOG_LEVEL" in line for line in lines), lines


def test_marketmood_variables_read_elsewhere_on_purpose_are_not_refused(tmp_path: Path, pg_url: str) -> None:
    """Compose's interpolation variables, the test suite's, and the service links Kubernetes gives every pod of
    a namespace with a `marketmood` / `marketmood-api` Service are not typos."""
    result = _run(tmp_path, "db", "current", MARKETMOOD_DATABASE_URL=pg_url, MARKETMOOD_VERSION="1.2.3",
                  MARKETMOOD_DATA_DIR="../../shared/data", MARKETMOOD_TEST_MODEL_PATH="/models/x", MARKETMOOD_TEST_PAUSE_S="5",
                  MARKETMOOD_GATE_TEST_MODEL="/models/y", MARKETMOOD_SERVICE_HOST="10.0.0.7",
                  MARKETMOOD_SERVICE_PORT="8000", MARKETMOOD_PORT="tcp://10.0.0.7:8000",
                  MARKETMOOD_API_PORT="tcp://10.0.0.8:8000", MARKETMOOD_API_PORT_8000_TCP_ADDR="10.0.0.8",
                  MARKETMOOD_API_SERVICE_PORT_HTTP="8000")
    assert result.returncode == 0, result.stderr
    assert "(up to date)" in result.stdout


def test_malformed_api_tokens_names_the_setting_and_hides_the_value(tmp_path: Path) -> None:
    [line] = _error_lines(_run(tmp_path, "db", "current", MARKETMOOD_API__TOKENS='["alice:s3cret-value"'))
    assert line.startswith("error: invalid setting MARKETMOOD_API__TOKENS")
    assert "JSON list" in line and "s3cret-value" not in line


def test_every_config_error_is_one_line_naming_its_setting(tmp_path: Path) -> None:
    bad = {
        "MARKETMOOD_WORKER__BATCH_SIZE": "many",
        "MARKETMOOD_DATABASE_URL": "mysql://root:hunter2@db/x",
        "MARKETMOOD_LOG_LEVEL": "LOUD",
        "MARKETMOOD_WORKER__BATCHSIZE": "3",
    }
    lines = _error_lines(_run(tmp_path, "db", "current", **bad))
    assert len(lines) == len(bad), lines
    for name in bad:
        assert sum(name + " " in line for line in lines) == 1, (name, lines)
    assert not any("hunter2" in line for line in lines)
    assert any("did you mean MARKETMOOD_WORKER__BATCH_SIZE?" in line for line in lines)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MARKETMOOD_WORKER": "{not json"}, "MARKETMOOD_WORKER"),
        ({"MARKETMOOD_CONFIG": "/nonexistent/marketmood.toml"}, "MARKETMOOD_CONFIG"),
    ],
)
def test_unparsable_values_and_files_are_one_line(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    [line] = _error_lines(_run(tmp_path, "db", "current", **env))
    assert expected in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+asyncpg://u:hunter2@db/x", "unsupported scheme 'postgresql+asyncpg'"),
        ("postgresql://u:hunter2@[::1/x", "cannot parse the URL"),
        ("postgresql://u:hunter2@db:99999999/x", "port 99999999 is out of range"),
        ("hunter2", "not a URL"),
    ],
)
def test_a_database_url_the_driver_cannot_use_is_one_line(tmp_path: Path, url: str, expected: str) -> None:
    [line] = _error_lines(_run(tmp_path, "db", "current", MARKETMOOD_DATABASE_URL=url))
    assert line.startswith("error: invalid setting MARKETMOOD_DATABASE_URL") and expected in line, line
    assert "hunter2" not in line


def test_a_bare_postgresql_url_uses_the_installed_driver(tmp_path: Path, pg_url: str) -> None:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3, which is not installed: the URL most people write."""
    bare = "postgresql://" + pg_url.split("://", 1)[1]
    result = _run(tmp_path, "db", "current", MARKETMOOD_DATABASE_URL=bare)
    assert result.returncode == 0, result.stderr
    assert "(up to date)" in result.stdout


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    result = _run(tmp_path, "models", "list", MARKETMOOD_DATABASE_URL="postgresql://u:hunter2@127.0.0.1:1/x")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: cannot reach PostgreSQL at postgresql+psycopg2://u:***@127.0.0.1:1/x"), line


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.toml", b"x = [1\n", "TOMLDecodeError"),
        ("list.yaml", b"- a\n- b\n", "cannot read the configuration"),
        ("broken.yaml", b"a: [1\n", "cannot read the configuration"),
        (".env", b"MARKETMOOD_LOG_LEVEL=\xff\xfe\n", "UnicodeDecodeError"),
    ],
)
def test_a_config_file_that_cannot_be_parsed_is_one_line(tmp_path: Path, name: str, content: bytes,
                                                         expected: str) -> None:
    (tmp_path / name).write_bytes(content)
    env = {} if name == ".env" else {"MARKETMOOD_CONFIG": str(tmp_path / name)}
    [line] = _error_lines(_run(tmp_path, "db", "current", **env))
    assert expected in line, line


def test_a_schedule_that_never_fires_is_refused_at_start(tmp_path: Path) -> None:
    [line] = _error_lines(_run(tmp_path, "db", "current", MARKETMOOD_RETRAIN__SCHEDULE="0 3 31 2 *"))
    assert "MARKETMOOD_RETRAIN__SCHEDULE" in line and "never fires" in line, line


def test_a_model_folder_that_is_not_an_artifact_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("text,label\nProfit rose,positive\n")
    (tmp_path / "empty").mkdir()
    for model in (tmp_path / "empty", tmp_path / "missing"):
        result = _run(tmp_path, "evaluate", "--model", str(model), "--labels", str(tmp_path / "labels.csv"))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{model} is not a MarketMood model artifact" in result.stderr


def test_an_infinite_timeout_is_one_line_not_a_traceback(tmp_path: Path, db_url: str) -> None:
    """inf passed every ``gt=0`` and crashed where the seconds became PostgreSQL milliseconds (``db upgrade``
    printed an OverflowError traceback); a timeout beyond PostgreSQL's int4 milliseconds failed at the server."""
    for name, value, expected in [
        ("MARKETMOOD_GRAFANA__READER_STATEMENT_TIMEOUT_S", "inf", "finite number"),
        ("MARKETMOOD_GRAFANA__READER_STATEMENT_TIMEOUT_S", "1e7", "less than or equal to 2147483"),
        ("MARKETMOOD_API__DB_STATEMENT_TIMEOUT_S", "inf", "finite number"),
        ("MARKETMOOD_WORKER__LOCK_TIMEOUT_S", "1e9", "less than or equal to 2147483"),
        # past int4 the server said only "syntax error at or near ..." without naming the variable
        ("MARKETMOOD_GRAFANA__READER_CONNECTION_LIMIT", "99999999999", "less than or equal to 2147483647"),
    ]:
        result = _run(tmp_path, "db", "upgrade", MARKETMOOD_DATABASE_URL=db_url, **{name: value})
        [line] = _error_lines(result)
        assert line.startswith(f"error: invalid setting {name} (") and expected in line, line


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("MARKETMOOD_MODEL__MAX_PADDING", "nan", "'auto' or 'off'"),
    ("MARKETMOOD_MODEL__SESSIONS", "0", "greater than or equal to 1"),
])
def test_a_value_no_member_of_a_union_takes_is_one_line_naming_the_variable(
        tmp_path: Path, name: str, value: str, expected: str) -> None:
    """It was one line per union member, each naming a variable that does not exist
    (MARKETMOOD_MODEL__MAX_PADDING__CONSTRAINED-FLOAT)."""
    [line] = _error_lines(_run(tmp_path, "db", "current", **{name: value}))
    assert line.startswith(f"error: invalid setting {name} (") and expected in line, line


def test_a_bootstrap_whose_port_is_not_a_number_is_one_line(tmp_path: Path) -> None:
    """The Kafka client's ``int(port)`` raised a bare ValueError deep in its start-up: a traceback from
    `marketmood publish` (and the worker) instead of a line naming the variable."""
    news = tmp_path / "news.jsonl"
    news.write_text('{"id": "a1", "title": "Shares fall", "published_at": "2024-01-01T00:00:00Z"}\n')
    [line] = _error_lines(_run(tmp_path, "publish", str(news), MARKETMOOD_KAFKA_BOOTSTRAP="localhost:notaport"))
    assert line.startswith("error: invalid setting MARKETMOOD_KAFKA_BOOTSTRAP (") and "port must be a number" in line
    result = _run(tmp_path, "publish", str(news), "--bootstrap", "kafka-1:9092,::::")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "Invalid value for '--bootstrap'" in result.stderr and "'::::'" in result.stderr, result.stderr
