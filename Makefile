# Everything a fresh machine needs: `make serve` runs Turnout, `make check test` checks and tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The e2e tests (and the deployment test that drives a real `turnout serve` with the SDK) run a second time against
# the last 2.x release of the openai SDK (LangChain and LlamaIndex pin it); so do the third-party clients' tests
# (tests/clients), whose packages (the `clients` extra) go into that venv only.
VENV_OPENAI2 := .venv-openai2

# Every shipped policy file, each checked and run against the cases file beside it.
POLICIES := $(filter-out %.cases.yaml,$(wildcard policies/*.yaml policies/examples/*.yaml))

.PHONY: install check check-policies test test-deps test-openai2 serve bench image clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv

$(VENV)/.installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $@

install: $(VENV)/.installed

check: install check-policies
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

# The policies reference ${OPENAI_API_KEY}; a placeholder lets them load without a real key.
check-policies: install
	@for policy in $(POLICIES); do \
		OPENAI_API_KEY=sk-placeholder $(BIN)/turnout check $$policy && \
		OPENAI_API_KEY=sk-placeholder $(BIN)/turnout test $$policy $${policy%.yaml}.cases.yaml || exit 1; \
	done

# The dashboard test runs Debian's Prometheus and promtool, the auth tests a PostgreSQL: a fresh machine (as root)
# gets them here. Without them those tests fail and say what is missing.
test-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
		[ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } || \
		echo "Debian's prometheus package is missing and could not be installed (as root: apt-get install -y prometheus)"
	@# The auth tests run against a real PostgreSQL: the one on 127.0.0.1:5432, else one they start with initdb.
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		[ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } || \
		echo "no PostgreSQL answers on 5432 and Debian's postgresql package could not be installed (as root: apt-get install -y postgresql)"

test: install test-deps
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-openai2

$(VENV_OPENAI2)/.installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $(VENV_OPENAI2)
	$(BIN)/uv pip install --quiet --python $(VENV_OPENAI2)/bin/python -e '.[dev,clients]' 'openai>=2,<3'
	touch $@

# Run once: the e2e files that never use the openai SDK (the CLI, `turnout keys`, the budget race over plain HTTP),
# and those whose subject is what the server does behind the answer (keys and budgets, canaries, the traffic log,
# cache locks across replicas, Redis URLs, deadlines, draining, traces, the dashboard's load): the SDK's major
# changes nothing in them, and they are five minutes of CI.
ONCE_E2E := $(addprefix --ignore=tests/e2e/,test_cli.py test_keys_cli.py test_budget_race.py test_keys.py \
	test_parity_canary.py test_traffic.py test_traffic_keys.py test_traffic_overflow.py test_traffic_export.py test_traffic_export_live.py \
	test_cache_locks.py test_redis_url.py test_deadline.py test_rolling.py test_tracing.py test_dashboard.py)

test-openai2: $(VENV_OPENAI2)/.installed
	$(VENV_OPENAI2)/bin/python -c 'import openai; print("e2e again with openai", openai.__version__)'
	$(VENV_OPENAI2)/bin/python -m pytest tests/e2e tests/clients tests/deploy/test_deploy.py $(ONCE_E2E)

# The image built and run for real without a Docker engine or a registry (tests/deploy/image.py): Debian's podman
# (installed here when missing, as root) builds the Dockerfile on a debootstrap base and runs it as the chart does.
image: install
	$(BIN)/python -m tests.deploy.image

serve: install
	$(BIN)/turnout serve

bench: install
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,bench]'
	$(BIN)/python -m tests.bench
	$(BIN)/python -m tests.bench.policy_decision
	$(BIN)/python -m tests.bench.token_estimate
	$(BIN)/python -m tests.bench.retrieval
	$(BIN)/python -m tests.bench.metrics_recording
	$(BIN)/python -m tests.bench.cache_hit
	$(BIN)/python -m tests.bench.semantic_cache
	$(BIN)/python -m tests.bench.slow_clients
	$(BIN)/python -m tests.bench.lock_outage
	$(BIN)/python -m tests.bench.log_redaction
	$(BIN)/python -m tests.bench.streams
	$(BIN)/python -m tests.bench.tracing
	$(BIN)/python -m tests.bench.traffic

clean:
	rm -rf $(VENV) $(VENV_OPENAI2) *.egg-info .mypy_cache .ruff_cache .pytest_cache
