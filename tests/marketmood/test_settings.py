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
