"""Benchmarks of mktsframe beside its peers (not tests: see ``bench/run.py`` and ``docs/benchmarks.md``)."""
