# configd — two set-up commands from a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONSUL_STAMP := .cache/consul/usr/bin/consul

.PHONY: bench run test install consul chromium lint typecheck schemas screenshots clean

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

bench: $(BENCH_STAMP) consul
	$(PY) -m bench.run

# The main job needs no browser: only the tests and `make screenshots` install Chromium.
run: $(STAMP) consul
	$(PY) -m configd dev

test: install
	$(PY) -m pytest

# The fast reliability tests also run in `make test`; this adds the long ones (reliability_long).
test-reliability: install
	$(PY) -m pytest tests/reliability -m "reliability or reliability_long" -s

typecheck: install
	@mkdir -p .cache/typecheck
	@ln -sfn ../../configd .cache/typecheck/configd
	@ln -sfn ../../client .cache/typecheck/configd_client
	@ln -sfn ../../cli .cache/typecheck/configctl
	$(VENV)/bin/mypy -p configd -p configd_client -p configctl

lint: install
	$(VENV)/bin/ruff check configd client cli tests scripts examples bench
	$(MAKE) typecheck

screenshots: install
	$(PY) scripts/ui_screenshots.py docs/screenshots

schemas: install
	$(PY) -m configd.record_schemas schemas

clean:
	rm -rf $(VENV) .cache build *.egg-info
