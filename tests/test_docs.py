"""The Sphinx site builds with warnings as errors (a broken docstring or link fails CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("pydata_sphinx_theme")
pytest.importorskip("myst_nb")

DOCS = Path(__file__).parent.parent / "docs"


@pytest.mark.timeout(180)
def test_sphinx_build_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees")]
    proc = subprocess.run([*cmd, str(DOCS), str(out)], capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every markdown page in docs/ is part of the site (the Reference toctree globs them).
    for page in DOCS.glob("*.md"):
        assert (out / f"{page.stem}.html").is_file(), page.name
    for nb in ("quickstart", "from-marketstore"):  # the notebooks, rendered through myst-nb
        assert "read_mkts" in (out / "notebooks" / f"{nb}.html").read_text(), nb
    api = (out / "guide" / "api.html").read_text()
    for name in ("MktsAccessor.write", "MktsAccessor.key", "read_mkts", "open_mkts_dataset", "SymbolBrowser"):
        assert name in api, name
    assert "DataFrame.mkts" in api
