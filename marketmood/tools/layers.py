"""Fail when a lower package imports a higher one (the allowed order lives in docs/architecture.md).

The rooms, bottom to top: ``models`` < ``storage`` < ``alerts``, ``training`` < ``streams`` < ``marketmood``.
A module may import its own package and any package of a lower rank; packages of the same rank (alerts and
training) do not import each other. ``tests`` and ``benchmarks`` sit above everything. Both module-level and
function-level imports count: a lazy import is still a dependency.

Run: ``python -m marketmood.tools.layers`` (exit 1 and one line per violation when the rule is broken).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The one place the order is written down (docs/architecture.md shows it as a diagram).
LAYERS: dict[str, int] = {
    "models": 0,
    "storage": 1,
    "alerts": 2,
    "training": 2,
    "streams": 3,
    "marketmood": 4,
}


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}: {self.importer} (rank {LAYERS[self.importer]}) imports "
                f"{self.imported} (rank {LAYERS[self.imported]}): only lower ranks may be imported")


def imported_packages(source: str) -> Iterator[tuple[int, str]]:
    """(line, top-level package) for every absolute import in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def allowed(importer: str, imported: str) -> bool:
    if importer == imported or imported not in LAYERS:
        return True
    return LAYERS[imported] < LAYERS[importer]


def check(root: Path = REPO_ROOT) -> list[Violation]:
    violations: list[Violation] = []
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            for line, imported in imported_packages(path.read_text(encoding="utf-8")):
                if not allowed(package, imported):
                    violations.append(Violation(path.relative_to(root), line, package, imported))
    return violations


def main() -> int:
    violations = check()
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} import(s) against the layer order models < storage < alerts, training < streams < marketmood", file=sys.stderr)
        return 1
    print("layers ok: every package imports only downward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
