"""Data flows one way: no layer imports from a layer above it.

The engine sits below the backends, and the shared values (:mod:`mktsframe.records`,
:mod:`mktsframe.changes`) below both; the streaming hub consumes a change feed, never the engine.
Checked on the source, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mktsframe

PACKAGE = Path(mktsframe.__file__).parent

# module or package -> prefixes it must never import
FORBIDDEN = {
    "replication": ("mktsframe.server", "mktsframe.streaming", "mktsframe.engine.engine"),
    "engine": ("mktsframe.backend", "mktsframe.io", "mktsframe.server", "mktsframe.streaming", "mktsframe.plugins"),
    "records.py": ("mktsframe.backend", "mktsframe.engine", "mktsframe.streaming"),
    "changes.py": ("mktsframe.backend", "mktsframe.engine", "mktsframe.streaming"),
    "streaming": ("mktsframe.engine", "mktsframe.server", "mktsframe.io"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_import_reaches_up(part: str) -> None:
    target = PACKAGE / part
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    bad = [
        f"{f.relative_to(PACKAGE)}:{line} imports {module}"
        for f in files
        for line, module in _imports(f)
        if module.startswith(FORBIDDEN[part])
    ]
    assert not bad, "\n".join(bad)
