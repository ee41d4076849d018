"""The composition root's service resolver: an unusable MARKETMOOD_HOME is a one-line config error."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from marketmood.runtime import open_database, usable_home
from marketmood.settings import ConfigError


def test_a_home_that_is_a_file_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="MARKETMOOD_HOME=.*cannot hold"):
        usable_home(blocker / "nested")
    with pytest.raises(ConfigError, match="MARKETMOOD_HOME"), open_database(None, blocker):
        pass
    assert usable_home(tmp_path / "fresh" / "home").is_dir()


def test_report_with_an_unusable_home_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`marketmood report` (and every command that starts the embedded database) died with a NotADirectoryError
    traceback when MARKETMOOD_HOME named a file."""
    blocker = tmp_path / "home"
    blocker.write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env["MARKETMOOD_HOME"] = str(blocker)
    result = subprocess.run([shutil.which("marketmood") or "marketmood", "report", "--out", str(tmp_path / "out")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MARKETMOOD_HOME" in lines[0], result.stderr
