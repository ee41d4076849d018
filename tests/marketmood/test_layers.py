"""The layer rule runs in CI: a lower package importing a higher one fails the suite."""

from __future__ import annotations

from pathlib import Path

from marketmood.tools.layers import LAYERS, allowed, check


def test_no_package_imports_a_higher_one() -> None:
    violations = check()
    assert violations == [], "\n".join(map(str, violations))


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "storage" / "bad.py").write_text("from alerts.payloads import render\n")
    (tmp_path / "training" / "sideways.py").write_text("import alerts.detector\n")
    (tmp_path / "streams" / "fine.py").write_text("from storage import db\nimport numpy\n")
    found = {(str(v.path), v.imported) for v in check(tmp_path)}
    assert found == {("storage/bad.py", "alerts"), ("training/sideways.py", "alerts")}
    assert allowed("marketmood", "models") and not allowed("models", "storage")
