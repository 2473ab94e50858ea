"""connect() by scheme: the registry, the entry-point group, and declared capabilities."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import mktsframe
from mktsframe.backend import Capabilities, capabilities, register_backend, registry
from mktsframe.backend.http import HTTPBackend
from mktsframe.backend.local import LocalBackend
from mktsframe.backend.objstore import ObjectStoreBackend


class _Echo:
    """A stand-in backend from 'another package': records what connect() handed it."""

    capabilities = Capabilities(write=False, delete=False, stream=False, pickle_spec=False)

    def __init__(self, target: str, **options: object) -> None:
        self.target, self.options = target, options


def test_entry_point_group_adds_a_scheme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site"
    (pkg / "echo_backend_pkg").mkdir(parents=True)
    (pkg / "echo_backend_pkg" / "__init__.py").write_text(
        "class Echo:\n    def __init__(self, target, **options):\n        self.target, self.options = target, options\n"
    )
    dist = pkg / "echo_backend_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mktsframe.backends]\nechoscheme = echo_backend_pkg:Echo\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_openers", dict(registry._openers))
    be = mktsframe.connect("echoscheme://somewhere/x", flavour="vanilla")
    assert type(be).__name__ == "Echo"
    assert (be.target, be.options) == ("echoscheme://somewhere/x", {"flavour": "vanilla"})
    assert "echoscheme" in registry.registered_schemes()
    sys.modules.pop("echo_backend_pkg", None)


def test_register_backend_and_conflicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_openers", dict(registry._openers))
    register_backend("echo", _Echo)
    be = mktsframe.connect("echo://a/b", read_only=True)
    assert isinstance(be, _Echo)
    assert be.options == {"read_only": True}
    assert capabilities(be).write is False
    with pytest.raises(ValueError, match="already registered"):
        register_backend("echo", lambda target, **kw: None)  # type: ignore[arg-type,return-value]
    register_backend("echo", _Echo)  # the same opener again is fine
    with pytest.raises(ValueError, match="unsupported backend URL scheme 'nosuch'"):
        mktsframe.connect("nosuch://x")


def test_builtin_backends_declare_what_they_do() -> None:
    assert capabilities(LocalBackend) == Capabilities(commit_listeners=True, stacked_query=True, stacked_write=True,
                                                      grid_query=True)  # fmt: skip
    assert capabilities(HTTPBackend) == Capabilities(stacked_query=True, stacked_write=True)
    caps = capabilities(ObjectStoreBackend)
    assert (caps.write, caps.delete, caps.stream, caps.pickle_spec) == (False, False, False, True)
    assert capabilities(object()) == Capabilities()  # declares nothing: the full protocol


_WRITE = """
import sys
import numpy as np, pandas as pd
import mktsframe
db = mktsframe.connect(sys.argv[1], read_only=False)
idx = pd.date_range("2024-01-01", periods=int(sys.argv[2]), freq="1min", tz="UTC")
pd.DataFrame({"Close": np.arange(len(idx), dtype="f4")}, index=idx).to_mkts("AAA/1Min/OHLCV", backend=db)
db.close()
"""


def test_open_spec_keeps_one_backend_and_follows_a_replaced_root(tmp_path: Path) -> None:
    """A worker's kept backend: reused while the root is the same; reopened when it was replaced."""
    import shutil
    import subprocess

    root = tmp_path / "root"
    subprocess.run([sys.executable, "-c", _WRITE, str(root), "10"], check=True)  # another process writes
    spec = registry.BackendSpec(str(root), {"read_only": True})
    first = registry.open_spec(spec)
    assert registry.open_spec(spec) is first
    assert len(first.query("AAA/1Min/OHLCV")["AAA/1Min/OHLCV"].index) == 10
    subprocess.run([sys.executable, "-c", _WRITE, str(root), "20"], check=True)  # the live root grows
    assert registry.open_spec(spec) is first
    assert len(first.query("AAA/1Min/OHLCV")["AAA/1Min/OHLCV"].index) == 20
    shutil.rmtree(root)  # replaced by another root at the same path
    subprocess.run([sys.executable, "-c", _WRITE, str(root), "7"], check=True)
    again = registry.open_spec(spec)
    assert again is not first
    assert len(again.query("AAA/1Min/OHLCV")["AAA/1Min/OHLCV"].index) == 7
    again.close()
