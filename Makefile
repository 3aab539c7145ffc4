# Two commands do all set-up on a fresh machine: `make run` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3
HOST    ?= $(shell hostname)

.PHONY: install etcd run test unit integration system lint bench demo fleet clean install-service

install: $(VENV)/.installed etcd

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

etcd:
	@scripts/ensure-etcd

run: install
	$(VENV)/bin/mgmtd run --hostname $(HOST) --prefix $(CURDIR)/.run/$(HOST) yaml examples/yaml/hello.yaml

# the system tests and the cluster-forming tests run beside the rest (scripts/run-tests says why)
test: install
	PY=$(PY) scripts/run-tests $(PYTEST_ARGS)

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# real systemd machines in namespaces (as root; skipped otherwise)
system: install
	$(PY) -m pytest tests/system $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check mgmtd tests

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache .hypothesis

install-service:
	scripts/install-service

# N local nodes on 127.0.0.1..N (NODES=5 IDEAL=3 make demo; TLS=1 for mutual TLS and etcd auth); Ctrl-C stops them
demo: install
	$(PY) scripts/demo.py

# N real machines (systemd as PID 1 in namespaces, as root), mgmtd enabled on each as
# docs/operations.md says (NODES=3 IDEAL=3 make fleet); Ctrl-C powers them off
fleet: install
	$(PY) scripts/fleet.py

# benchmarks (bench/README.md); puppet, the optional reference, is never installed
.PHONY: bench-quick
bench: install $(VENV)/.bench-installed
	$(PY) bench/run.py

bench-quick: install $(VENV)/.bench-installed
	$(PY) bench/run.py --quick

# the bench's own dependency (matplotlib, for the PNG chart), into the project's venv
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@
