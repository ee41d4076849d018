"""``marketmood feedback import`` refuses unreadable files with a message (no traceback, nothing stored)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from marketmood.cli import cli


def test_feedback_import_of_a_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "feedback.csv"
    path.write_bytes("text,sentiment\nBaisse des march\xe9s,negative\n".encode("latin-1"))
    result = CliRunner().invoke(cli, ["feedback", "import", str(path), "--by", "ann"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a traceback
    assert "not a UTF-8 CSV file" in result.output and "nothing imported" in result.output
