# `make serve` and `make test` work on a fresh machine: they create .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-peers bench-candles bench-stream bench-universe bench-scale bench-replication soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e '.[test,browser-test]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m mktsframe.server

# The oldest supported pandas (2.2, numpy 2) in a second venv: the pandas-facing tests run again there
# (pandas I/O and its fast paths, CSV, shell/SQL, xarray, widgets, notebooks, the server through
# pymarketstore and HTTPBackend); the engine, WAL and crash suites do not touch pandas and run once.
PD2 := .venv-pandas2
PD2_STAMP := $(PD2)/.installed
PD2_TESTS := tests/test_pandas_io.py tests/test_pandas_compat.py tests/test_stacked_reads.py tests/test_stacked_writes.py tests/test_xarray.py tests/test_notebooks.py \
	tests/test_magics.py tests/test_widgets.py tests/test_live_view.py tests/functions tests/cli \
	tests/plugins/test_ondiskagg.py tests/server/test_server_backends.py tests/server/test_server_pymarketstore.py \
	tests/server/test_server_sql.py tests/server/test_server_functions.py tests/server/test_server_notebook.py \
	tests/server/test_server_ticks.py tests/server/test_server_stacked.py

$(PD2_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PD2)
	$(PD2)/bin/python -m pip install -q --upgrade pip
	$(PD2)/bin/python -m pip install -q -e '.[test-core]' 'pandas==2.2.*'
	touch $(PD2_STAMP)

test: $(STAMP) $(PD2_STAMP)
	$(PY) -m ruff check mktsframe tests bench notebooks
	$(PY) -m pytest
	$(PD2)/bin/python -m pytest -p no:cacheprovider $(PD2_TESTS)

# The browser test (tests/test_jupyterlab_browser.py) drives Debian's Chromium; installed once (we run as root).
.PHONY: chromium doc-images
test: chromium
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# Screenshots of the widgets in JupyterLab (the browser test's) into docs/images/.
doc-images: $(STAMP) chromium
	MKTS_UPDATE_DOC_IMAGES=1 $(PY) -m pytest -q tests/test_jupyterlab_browser.py

# The Sphinx site (docs/*.md plus the API from docstrings) into docs/_build/html; warnings are errors.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# Peers needing other library versions (ArcticDB: pandas < 3) live in their own venv.
PEERS := bench/.venv-peers
PEERS_STAMP := $(PEERS)/.installed

$(PEERS_STAMP): bench/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade pip
	$(PEERS)/bin/python -m pip install -q -r bench/requirements-peers.txt
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)

# Full run (3–7 minutes on a 2-CPU VM): prints the table and targets, writes bench/results/*.json and docs/benchmarks.md.
bench: $(STAMP) $(PEERS_STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run.py $(BENCH_ARGS)

# Candles 1Min→5Min/1H/1D on 1M bars beside pandas and ArcticDB (~1 minute): the ## Candles section.
bench-candles: $(STAMP) $(PEERS_STAMP)
	$(PY) bench/candles_bench.py $(BENCH_ARGS)

# /ws push latency and writers' throughput, 1 and 100 subscribers over loopback (9 rounds: ~3 minutes on a fast 2-CPU VM, ~15 on a slow one): the ## Streaming section.
bench-stream: $(STAMP)
	$(PY) bench/stream_bench.py $(BENCH_ARGS)

# 5,000 symbols × 2 days of 1Min bars beside ArcticDB, every process under ulimit -n 256: cross-sections, a day of
# the universe, one bar to every symbol, 50 writers through the server (~10 minutes): the ## Universe section.
bench-universe: $(STAMP) $(PEERS_STAMP)
	bash -c 'ulimit -n 256 && exec $(PY) bench/universe_bench.py $(BENCH_ARGS)'

# One-day reads from S3 (moto's server on loopback) beside ArcticDB's s3:// library, and 100 symbols × 2 years
# of 5Min bars scanned with read_dask on LocalCluster(2 workers × 1 thread) vs one process vs read_parquet
# (~5 minutes): prints the ratios, writes bench/results/scale-*.json and the ## Scaling section.
bench-scale: $(STAMP) $(PEERS_STAMP)
	$(PY) bench/scale_bench.py $(BENCH_ARGS)

# Master + two replicas on loopback: lag ack → readable, 1-row write throughput with 2 replicas vs none, catch-up of
# 1,000,000 missed 1Min bars vs writing them (3 rounds: ~3 minutes): the ## Replication section.
bench-replication: $(STAMP)
	$(PY) bench/replication_bench.py $(BENCH_ARGS)

# Writers, readers, reconnecting /ws subscribers and a kill -9 of the server every 150 s, for 10 minutes
# (SOAK_ARGS="--duration 1800" for longer): every acknowledged row read back, RSS/fds/p99 flat. The ## Soak section.
soak: $(STAMP)
	$(PY) bench/soak.py --duration 600 --kill-every 150 $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(PD2) $(PEERS) .pytest_cache .ruff_cache docs/_build
