# livepanel — two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest jstest reacttest docs docscheck bench soak clean services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# What the tests need beyond pip, from Debian's packages: redis-server, redis-sentinel and
# redis-tools' redis-cli (tests start their own instances, Sentinels and Clusters), nginx
# (the deployment recipe's test), chromium (the browser tests; Playwright's own browser
# download is never used), tmux (`livepanel top` in a real terminal) and haproxy (the
# health-check recipe's test) and postgresql (the PostgreSQL backend's tests use the server
# on 127.0.0.1:5432, and start private clusters with its initdb and postgres). Installed
# only when missing; the server is started when it does not answer.
APT_NEEDS := $(if $(shell command -v redis-server),,redis-server) \
	$(if $(shell command -v redis-sentinel),,redis-sentinel) \
	$(if $(shell command -v redis-cli),,redis-tools) \
	$(if $(shell PATH="$$PATH:/usr/sbin" command -v nginx),,nginx-light) \
	$(if $(shell command -v chromium),,chromium) \
	$(if $(shell command -v caddy),,caddy) \
	$(if $(shell command -v tmux),,tmux) \
	$(if $(shell PATH="$$PATH:/usr/sbin" command -v haproxy),,haproxy) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql)

services:
	@if [ -n "$(strip $(APT_NEEDS))" ]; then \
		echo "installing $(strip $(APT_NEEDS))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_NEEDS) >/dev/null; \
	fi
	@if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		echo "starting PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /usr/lib/postgresql | sort -n | tail -1) main start 2>/dev/null \
			|| service postgresql start; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	fi
	@psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
		|| su postgres -c "createdb -h 127.0.0.1 test" 2>/dev/null || true

PY_DIRS := $(wildcard src tests examples benchmarks docs/hooks)

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

typecheck: $(STAMP)
	$(BIN)/mypy src

pytest: $(STAMP) services
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

# livepanel.js's pure parts (backoff, jitter, give-up) on Node's own test runner
jstest:
	node --test tests/js/

# the React example's hook, with vitest, from the committed lock file
reacttest:
	cd examples/react && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run typecheck

# the documentation site into site/ (gitignored); --strict fails on a broken link, reference
# or include (never add -q: mkdocs then hides the warnings that --strict turns into errors)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the same strict build for make test, into a temporary folder removed afterwards
docscheck: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$tmp"

test: lint typecheck docscheck jstest reacttest pytest

demo: $(STAMP)
	$(BIN)/livepanel demo

# fan-out against peers (table, JSON, docs/img/benchmarks.png), then memory vs Redis latency
bench: $(STAMP) services
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/fanout.py --plot docs/img/benchmarks.png
	$(BIN)/python benchmarks/latency.py

# 2,000 clients on one worker for ten minutes with churn; exits 1 on any loss or duplicate
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --duration 600

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache site
