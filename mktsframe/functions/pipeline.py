"""The ``functions`` list of a query: parse every call up front, then run them in order.

Each function's output is the next one's input (MarketStore chains them), and the chain runs per
bucket on the rows the query selected — so ``limit`` counts input rows, not candles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mktsframe.backend.base import Batch
from mktsframe.errors import FunctionError
from mktsframe.functions import summaries
from mktsframe.functions.candles import candlecandler, tickcandler
from mktsframe.functions.syntax import Call, parse_call

__all__ = ["FUNCTIONS", "apply_functions", "parse_functions"]

#: Most calls accepted in one chain.
MAX_CALLS = 64

#: Query functions by lower-case name; each maps (rows, parsed call) → rows.
FUNCTIONS: dict[str, Callable[[Batch, Call], Batch]] = {
    "candlecandler": candlecandler,
    "tickcandler": tickcandler,
    "count": summaries.count,
    "min": summaries.minimum,
    "max": summaries.maximum,
    "avg": summaries.avg,
    "gap": summaries.gap,
}


def parse_functions(texts: Sequence[str] | str) -> list[Call]:
    """Parse and check a ``functions`` list (a single string is one call) before any data is read."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise FunctionError(f"functions must be a list of strings like [\"count(*)\"], got {type(texts).__name__}")
    if len(texts) > MAX_CALLS:
        raise FunctionError(f"too many functions in one query ({len(texts)} > {MAX_CALLS})")
    calls = [parse_call(t) for t in texts]
    for c in calls:
        if c.name not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise FunctionError(f"unknown function {c.name!r} in {c.text!r} (known: {known})")
    return calls


def apply_functions(batch: Batch, calls: Sequence[Call] | Sequence[str] | str) -> Batch:
    """Run the chain on one bucket's rows (index int64 ns UTC) and return the last output."""
    parsed = [c if isinstance(c, Call) else parse_call(c) for c in ([calls] if isinstance(calls, str) else calls)]
    if not all(c.name in FUNCTIONS for c in parsed):
        parse_functions([c.text for c in parsed])  # raises, naming the unknown one
    for c in parsed:
        batch = FUNCTIONS[c.name](batch, c)
    return batch
