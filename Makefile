# Oba developer tasks. `make run` starts a local server, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint clean

install: $(STAMP)

# Re-install only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/oba serve --config config.local.yaml --example-data

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; that is not a failure while suites are empty.
test: lint
	$(BIN)/pytest tests || [ $$? -eq 5 ]

clean:
	rm -rf data build dist .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

# A local 3-node cluster (LDAP 1389/2389/3389, Raft 4445-4447, REST 8081-8083) in ./cluster-data
.PHONY: cluster cluster-stop
cluster: install
	$(BIN)/oba cluster local --nodes 3 --data ./cluster-data

cluster-stop:
	$(BIN)/oba cluster stop --data ./cluster-data
