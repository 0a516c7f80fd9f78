# configd — two set-up commands from a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONSUL_STAMP := .cache/consul/usr/bin/consul

.PHONY: bench bench-smoke run test test-unit test-integration test-browser test-reliability install consul chromium lint typecheck schemas screenshots ui-assets clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "configd needs Python >= 3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP) consul chromium

consul:
	@bash scripts/install-consul.sh >/dev/null

chromium:
	@bash scripts/install-chromium.sh

# Benchmarks beside raw Consul (~10 min on 2 cores; not part of `make test`): docs/benchmarks.md, bench/results/.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

# `make bench QUICK=1`: tiny parameters, ~1 min, results to .cache/bench-quick (the committed docs stay as they are).
bench: $(BENCH_STAMP) consul
ifdef QUICK
	$(PY) -m bench.run --quick --out .cache/bench-quick/latest.json --doc .cache/bench-quick/benchmarks.md --plot .cache/bench-quick/benchmarks.png
else
	$(PY) -m bench.run
endif

# The benchmark scripts end to end with tiny parameters, as a test (opt-in; not part of `make test`).
bench-smoke: $(BENCH_STAMP) consul
	$(PY) -m pytest tests/bench -m bench

# The main job needs no browser: only the tests and `make screenshots` install Chromium.
run: $(STAMP) consul
	$(PY) -m configd dev

# Tiers (docs/architecture.md): unit (no network, seconds), integration (real Consul + servers), browser (real
# Chromium), reliability (failover, outages, hostile input). `make test` runs all four.
# TEST_WORKERS: pytest-xdist processes; each runs its share of test modules (--dist loadscope) against its own
# Consul agent. Most tests wait on Consul and subprocesses, so 3 workers fit 2 cores. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --durations=30

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: install
	$(PY) -m pytest tests/integration

test-browser: install
	$(PY) -m pytest tests/browser

# The fast reliability tests also run in `make test`; this adds the long ones (reliability_long).
test-reliability: install
	$(PY) -m pytest tests/reliability -m "reliability or reliability_long" -s

typecheck: install
	$(VENV)/bin/mypy -p configd -p configd_core -p configd_client -p configctl

lint: install
	$(VENV)/bin/ruff check configd core client cli tests scripts examples bench
	$(MAKE) typecheck

screenshots: install
	$(PY) scripts/ui_screenshots.py docs/screenshots

# The browser editor (CodeMirror 6 from npm, bundled by esbuild) -> configd/static/editor.js, committed so that
# `make run` needs no Node. Needs Node >= 18 and npm; the versions are pinned in ui-assets/package-lock.json.
ui-assets:
	cd ui-assets && npm ci --no-audit --no-fund --ignore-scripts && npm run build

schemas: install
	$(PY) -m configd.record_schemas schemas

clean:
	rm -rf $(VENV) .cache build *.egg-info
