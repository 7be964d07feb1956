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

# The local cluster plus a real HAProxy (Debian package haproxy) in front: LDAP 10389 (all live
# nodes), REST 8080 (the leader), stats 8404. `make cluster-stop` stops HAProxy too (by PID).
# OBA_LOCAL_PORT_OFFSET=N shifts every port by N.
.PHONY: cluster-haproxy
cluster-haproxy: install
	$(BIN)/oba cluster local --haproxy --nodes 3 --data ./cluster-data

# A long fuzz run of LDAP request handling (make test runs a short one); crashes go to
# tests/unit/fuzz_corpus/.
.PHONY: fuzz
fuzz: install
	OBA_FUZZ_EXAMPLES=20000 $(BIN)/pytest tests/unit/test_fuzz_connection.py -q -k fuzz_request

# The chaos harness (tests/chaos, docs/reliability.md): SEEDS runs of DURATION seconds each, the
# nemesis kind cycling (kill, pause, isolate, partition, bridge, links, mix); results and the
# logs of failed runs in ./chaos-results. Replay one run: make chaos SEED=12 KIND=mix.
SEEDS ?= 7
FIRST_SEED ?= 0
DURATION ?= 60
.PHONY: chaos
chaos: install
	PYTHONPATH=tests $(BIN)/python -m chaos.run --duration $(DURATION) --out chaos-results \
		$(if $(SEED),--seed $(SEED) $(if $(KIND),--kind $(KIND)),--seeds $(SEEDS) --first-seed $(FIRST_SEED))
