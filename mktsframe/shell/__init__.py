"""The interactive ``connect`` shell (MarketStore's session commands and SQL)."""

from mktsframe.shell.session import MktsShell, parse_shape, run

__all__ = ["MktsShell", "parse_shape", "run"]
