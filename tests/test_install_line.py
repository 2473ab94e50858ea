"""The README's one install line for the notebooks covers everything they import and run.

The old line (`.[jupyter,xarray,dask]`) left out uvicorn (the notebooks' server) and
pymarketstore: both notebooks failed. Here the extras that line names are expanded through
pyproject.toml and compared with the notebooks' own imports and the extras of the features they
use (the server, the widgets, xarray with dask chunks) and JupyterLab to run them in.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()  # type: ignore[union-attr]


def closure(extras: set[str]) -> set[str]:
    """Distribution names installed by ``pip install '.[extras]'`` (this project's own level only)."""
    names = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in EXTRAS[extra]:
            m = re.fullmatch(r"mktsframe\[([^\]]+)\]", req)
            if m:
                todo += [e.strip() for e in m.group(1).split(",")]
            else:
                names.add(_name(req))
    return names


def readme_extras() -> set[str]:
    lines = re.findall(r"pip install -e '\.\[([^\]]+)\]'", (REPO / "README.md").read_text())
    assert len(lines) == 1, f"the README should give one install line for the notebooks, found {lines}"
    return {e.strip() for e in lines[0].split(",")}


def notebook_imports(path: Path) -> set[str]:
    nb = nbformat.read(path, as_version=4)
    mods: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.source.startswith("%%"):  # a cell magic's body is not Python
            continue
        # Line magics (`%mkts ls`, `x = %mkts read ...`) and shell escapes are not Python either.
        src = re.sub(r"^(\s*|.*=\s*)[%!]\S.*$", r"\1None", cell.source, flags=re.MULTILINE)
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"mktsframe"}


def test_readme_install_line_runs_both_notebooks() -> None:
    have = closure(readme_extras())
    dists = importlib.metadata.packages_distributions()
    needed: dict[str, str] = {}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for mod in notebook_imports(path):
            for dist in dists.get(mod, [mod]):
                needed[_name(dist)] = f"{path.name} imports {mod}"
    for extra in ("server", "jupyter", "xarray", "dask"):  # ServerProcess, widgets/%mkts, open_dataset(chunks=)
        for req in EXTRAS[extra]:
            needed.setdefault(_name(req), f"the notebooks use the {extra!r} extra")
    needed["jupyterlab"] = "the notebooks are opened in JupyterLab"
    missing = {name: why for name, why in needed.items() if name not in have}
    assert missing == {}, f"the README's install line leaves out: {missing}"
    assert {"pymarketstore", "uvicorn", "plotly"} <= have


def test_the_old_line_would_have_failed() -> None:
    """The check above can fail: the line the issue was filed against misses what it reported."""
    old = closure({"jupyter", "xarray", "dask"})
    assert "uvicorn" not in old
    assert "pymarketstore" not in old
